"""Continue training a shapes-world model's UNet: more steps, optionally a shape-weighted loss.

The VAE, tokenizer and text encoder are the model's own and stay frozen, so
the latent space and the prompt reading do not move; only the UNet learns.
The run is resumable like ``train`` (its checkpoint lives in ``out_dir``) and
exports a pipeline whose ``sdlab.json`` keeps the model's history plus a line
for this run.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..io import atomic_write_text, check_output
from ..trainlog import append_log
from ..progress import Callback
from ..validation import NON_NEGATIVE, POSITIVE, POSITIVE_INT, SEED, UNIT, invalid, validate_fields
from .config import config_from_dict
from .data import encode_latents, prepare_data
from .export import export_pipeline
from .stages.unet import train_unet

FINETUNE_STAGE = 7  # batch draws independent of the from-scratch run's UNet stage


@dataclass(frozen=True)
class FinetuneConfig:
    """What decides a fine-tune run (with the starting model, it is reproducible)."""

    steps: int = 3_000
    lr: float = 1.5e-4
    final_lr_fraction: float = 0.1
    warmup_steps: int = 200
    foreground_weight: float = 0.0  # see stages.foreground.latent_foreground
    seed: int = 0
    checkpoint_minutes: float = 3.0

    _parameter_constraints = {
        "steps": [POSITIVE_INT], "warmup_steps": [POSITIVE_INT], "lr": [POSITIVE], "final_lr_fraction": [UNIT],
        "foreground_weight": [NON_NEGATIVE], "seed": [SEED], "checkpoint_minutes": [NON_NEGATIVE],
    }

    def __post_init__(self) -> None:
        validate_fields(self)


def model_directory(model: str | Path) -> Path:
    """``shapes-world`` names the shipped weights; anything else is a pipeline directory."""
    from ..models import SHAPES_WORLD, SHIPPED_DIR

    return SHIPPED_DIR if str(model) == SHAPES_WORLD else Path(model)


def finetune(
    model_dir: str | Path, out_dir: str | Path, cfg: FinetuneConfig = FinetuneConfig(), progress: bool = True,
    callback: Callback | None = None,
) -> Path:
    """Fine-tune the UNet of the pipeline in ``model_dir``; return the exported pipeline directory.

    ``callback(step, total)`` follows the UNet steps and may stop the run by raising (see :func:`~sdlab.mini.stages.unet.train_unet`).
    """
    from diffusers import StableDiffusionPipeline

    from ..models import SDLAB_META

    model_dir, out = Path(model_dir), check_output("out", out_dir, "dir")
    if not (model_dir / SDLAB_META).exists():
        raise invalid("model", str(model_dir), f"a shapes-world pipeline directory (one with {SDLAB_META})")
    meta = json.loads((model_dir / SDLAB_META).read_text())
    base = config_from_dict(meta["training"])
    run_cfg = replace(
        base, seed=cfg.seed, unet_steps=cfg.steps, unet_lr=cfg.lr, unet_final_lr_fraction=cfg.final_lr_fraction,
        warmup_steps=cfg.warmup_steps, unet_foreground_weight=cfg.foreground_weight, checkpoint_minutes=cfg.checkpoint_minutes,
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "finetune_config.json", json.dumps({"model": str(model_dir), **asdict(cfg)}, indent=2))
    started = time.time()
    pipe = StableDiffusionPipeline.from_pretrained(model_dir)
    vae, text, tok = pipe.vae.requires_grad_(False).eval(), pipe.text_encoder.requires_grad_(False).eval(), pipe.tokenizer
    images, data = prepare_data(out, base)  # the model's own training set (same size and seed)
    latents = encode_latents(out, vae, images, progress=progress)
    scaled = latents * vae.config.scaling_factor
    unet, _ = train_unet(
        out, scaled, data["TEXT"].tolist(), tok, text, run_cfg, progress, images=images, init=pipe.unet, stage=FINETUNE_STAGE, callback=callback,
    )
    target = export_pipeline(out, vae, text, unet.eval(), tok, meta["preview"], run_cfg, defaults=meta["defaults"])
    exported = json.loads((target / SDLAB_META).read_text())
    line = (
        f"UNet fine-tune of the weights above: {cfg.steps:,} more steps, lr {cfg.lr:g} (warm-up {cfg.warmup_steps}, cosine to "
        f"{cfg.final_lr_fraction:g}), fresh AdamW, EMA {base.ema_decay} started from the model's weights, "
        f"foreground weight {cfg.foreground_weight:g}, seed {cfg.seed}; VAE, tokenizer and text encoder unchanged"
    )
    exported["training"]["history"] = [*meta["training"].get("history", []), line]
    atomic_write_text(target / SDLAB_META, json.dumps(exported, indent=2))
    append_log(out, {"stage": "finetune_done", "seconds_this_run": time.time() - started, "time": time.time()})
    return target
