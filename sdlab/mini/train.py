"""Train the shapes world from scratch: data -> VAE -> cached latents -> text encoder -> UNet -> decoder.

Each stage (:mod:`sdlab.mini.stages`) leaves its result in the output
directory and is skipped when that result is already there, and the long
stages checkpoint every few minutes, so ``sdlab mini train --out DIR`` killed
at any point resumes where it stopped. Every stage draws its batches from a
generator seeded by (seed, stage, step), so a resumed run is the same run.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from ..cost import TRAINING_LIMIT_S, check_budget, training_seconds
from ..io import atomic_write_text, check_output
from ..trainlog import append_log
from ..progress import Callback
from . import tokenizer as tokenizer_lib
from . import world
from .config import TrainConfig
from .data import encode_latents, prepare_data
from .export import export_pipeline, fit_preview_factors
from .stages.autoencoder import finetune_decoder, train_vae
from .stages.text import pretrain_text_encoder
from .stages.unet import train_unet


def train(out_dir: str | Path, cfg: TrainConfig = TrainConfig(), progress: bool = True,
          callback: Callback | None = None) -> Path:
    """Run (or resume) every stage and return the exported pipeline directory.

    ``callback(done, total)`` counts the steps of all four trained stages (VAE,
    text encoder, UNet, decoder) as one run; when it raises (a panel's Cancel),
    the stage in progress checkpoints and a rerun resumes there.
    """
    out = check_output("out", out_dir, "dir")  # a file or an unwritable place fails before the data is made
    side = world.IMAGE_SIZE // cfg.model.vae_factor
    unet = {"block_out_channels": list(cfg.model.unet_channels), "layers_per_block": 1,
            "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.model.unet_attention]}
    check_budget("unet_steps", cfg.unet_steps, seconds=training_seconds(unet, side, side, cfg.unet_batch, cfg.unet_steps),
                 limit_s=TRAINING_LIMIT_S)  # the UNet stage, most of the run: a step count that would not end today
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "train_config.json", json.dumps(asdict(cfg), indent=2))
    started = time.time()
    total = cfg.vae_steps + cfg.text_steps + cfg.unet_steps + cfg.decoder_steps

    def after(offset: int) -> Callback | None:
        return None if callback is None else (lambda step, _stage_total: callback(offset + step, total))

    images, meta = prepare_data(out, cfg)
    tok = tokenizer_lib.save_tokenizer(world.vocabulary(), out / "tokenizer")
    vae = train_vae(out, images, cfg, progress, after(0))
    vae.requires_grad_(False)
    latents = encode_latents(out, vae, images, progress=progress)
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    scaled = latents * scaling
    preview = fit_preview_factors(scaled, images)
    text = pretrain_text_encoder(out, meta["TEXT"].tolist(), tok, cfg, progress, after(cfg.vae_steps))
    unet, text = train_unet(out, scaled, meta["TEXT"].tolist(), tok, text, cfg, progress, images=images,
                            callback=after(cfg.vae_steps + cfg.text_steps))
    vae = finetune_decoder(out, vae, images, cfg, progress, after(cfg.vae_steps + cfg.text_steps + cfg.unet_steps))
    vae.register_to_config(scaling_factor=scaling)
    target = export_pipeline(out, vae, text, unet, tok, preview, cfg)
    append_log(out, {"stage": "done", "seconds_this_run": time.time() - started, "time": time.time()})
    return target
