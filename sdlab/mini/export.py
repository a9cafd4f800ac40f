"""A trained shapes world as a standard diffusers ``StableDiffusionPipeline`` directory plus ``sdlab.json``.

:func:`export_pipeline` writes what a finished run (or a fine-tune) made;
:func:`export_checkpoint` writes one from a run's UNet checkpoint mid-training.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..images import to_tensor
from ..io import atomic_write_text
from . import model as model_lib
from . import tokenizer as tokenizer_lib
from . import world
from .config import TrainConfig, config_from_dict
from .data import prepare_data

PIPELINE_DIR = "pipeline"


def fit_preview_factors(latents: np.ndarray, images: np.ndarray) -> dict:
    """Least-squares linear map from (scaled) latent channels to RGB in [-1, 1], as A1111's cheap previews."""
    n, c, h, w = latents.shape
    small = to_tensor(images).reshape(n, 3, h, images.shape[1] // h, w, images.shape[2] // w).mean(dim=(3, 5))
    x = np.concatenate([latents.transpose(0, 2, 3, 1).reshape(-1, c), np.ones((n * h * w, 1), np.float32)], axis=1)
    y = small.numpy().transpose(0, 2, 3, 1).reshape(-1, 3)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return {"latent_rgb_factors": coef[:c].round(5).tolist(), "latent_rgb_bias": coef[c].round(5).tolist()}


def _drop_source_paths(pipeline_dir: Path) -> None:
    """Remove ``_name_or_path`` from the saved component configs.

    diffusers and transformers record where a component was loaded from; in an
    exported pipeline that is a path on the training machine, meaningless (and
    leaking) anywhere else.
    """
    for config in sorted(pipeline_dir.glob("*/config.json")):
        saved = json.loads(config.read_text(encoding="utf-8"))
        if "_name_or_path" in saved:
            del saved["_name_or_path"]
            atomic_write_text(config, json.dumps(saved, indent=2, sort_keys=True) + "\n")


def export_pipeline(out: Path, vae, text, unet, tok, preview: dict, cfg: TrainConfig, defaults: dict | None = None, name: str = PIPELINE_DIR) -> Path:
    """Save a standard diffusers ``StableDiffusionPipeline`` directory plus ``sdlab.json``."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from ..models import SDLAB_META, MODEL_DEFAULTS

    scheduler = DPMSolverMultistepScheduler.from_config(model_lib.build_noise_scheduler().config)
    pipe = StableDiffusionPipeline(
        vae=model_lib.pin_posterior(vae), text_encoder=text, tokenizer=tok, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    target = out / name
    pipe.save_pretrained(target, safe_serialization=True)
    _drop_source_paths(target)
    tokenizer_lib.write_vocab_files(tok, target / "tokenizer")
    meta = {
        "name": "shapes-world",
        "defaults": defaults or {**MODEL_DEFAULTS, "width": world.IMAGE_SIZE, "height": world.IMAGE_SIZE},
        "preview": preview,
        "training": {k: v for k, v in asdict(cfg).items()},
        "vocabulary": world.vocabulary(),
    }
    atomic_write_text(target / SDLAB_META, json.dumps(meta, indent=2))
    return target


def export_checkpoint(out_dir: str | Path, target: str | Path | None = None, checkpoint: str | Path | None = None) -> Path:
    """Export a pipeline from a run's latest UNet checkpoint (or ``checkpoint``), EMA weights, mid-training.

    Uses the fine-tuned decoder when that stage has finished, else the VAE.
    """
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    out = Path(out_dir)
    cfg = config_from_dict(json.loads((out / "train_config.json").read_text()))
    state = torch.load(Path(checkpoint) if checkpoint else out / "unet.ckpt", weights_only=True)
    tok = CLIPTokenizer.from_pretrained(out / "tokenizer")
    unet = model_lib.build_unet(cfg.model)
    unet.load_state_dict(state["ema_unet"])
    text = CLIPTextModel.from_pretrained(out / "text_encoder")
    vae_dir = out / "vae_decoder" if (out / "vae_decoder" / "config.json").exists() else out / "vae"
    vae = AutoencoderKL.from_pretrained(vae_dir)
    latents = np.load(out / "latents.npy")
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    images, _ = prepare_data(out, cfg)
    preview = fit_preview_factors(latents * scaling, images)
    destination = Path(target) if target else out / f"pipeline-step{state['step']}"
    export_pipeline(destination.parent, vae, text.eval(), unet.eval(), tok, preview, cfg, name=destination.name)
    return destination
