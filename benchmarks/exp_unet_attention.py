"""Experiment (issues 23 and 24): does a shapes-world UNet with attention at 16x16 forget less when a LoRA learns the star?

The shipped UNet (v5) has cross-attention at 8x8 and 4x4 only; it draws shapes at 16x16 with convolutions, so a new
shape is new convolution weights that every prompt passes through, and every star LoRA measured so far cost the base
model 16 points or more. Here a UNet with cross-attention at every level is trained with the shipped recipe
(``TrainConfig`` defaults but ``--steps``) against the shipped VAE and text encoder (frozen, as in the shipped run,
so its latents and captions are the same), exported under ``--out``, and measured with ``sdlab mini eval``'s prompts.
Then ``bench_finetune.py --model OUT/pipeline --cells ...`` trains the same LoRA cells on it as on the shipped model.

    python benchmarks/exp_unet_attention.py [--steps 5000 --out runs/v6probe --eval 160]

A probe, not a release: a model to ship is ``sdlab mini train`` from scratch, and its ControlNets must be retrained.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from sdlab.finetune import evaluate
from sdlab.mini import checker, world
from sdlab.mini.config import TrainConfig
from sdlab.mini.data import encode_latents, prepare_data
from sdlab.mini.export import export_pipeline, fit_preview_factors
from sdlab.mini.model import ModelConfig
from sdlab.mini.stages.unet import train_unet
from sdlab.models import load_pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5000, help="UNet steps (the shipped model: 11000)")
    ap.add_argument("--images", type=int, default=40_000, help="training images (the shipped model: 40000)")
    ap.add_argument("--out", default="runs/v6probe")
    ap.add_argument("--eval", type=int, default=160, help="evaluation prompts (world.evaluation_prompts)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = dataclasses.replace(ModelConfig(), unet_attention=(True, True, True))
    cfg = dataclasses.replace(TrainConfig(), unet_steps=args.steps, n_images=args.images, model=model)
    shipped = load_pipeline("shapes-world", device="cpu")
    started = time.time()
    images, meta = prepare_data(out, cfg)
    with torch.no_grad():
        scaled = encode_latents(out, shipped.vae, images, progress=False) * shipped.vae.config.scaling_factor
    unet, text = train_unet(out, scaled, meta["TEXT"].tolist(), shipped.tokenizer, shipped.text_encoder, cfg, progress=False, images=images)
    minutes = (time.time() - started) / 60
    target = export_pipeline(out, shipped.vae, text, unet, shipped.tokenizer, fit_preview_factors(scaled, images), cfg)
    rows = {}
    for name, pipe in (("shipped v5", shipped), ("attention at every level", load_pipeline(str(target), device="cpu"))):
        table = evaluate.generate_table(pipe, world.evaluation_prompts(args.eval), checker.score)
        rows[name] = {a: round(evaluate.share(table, f"{a}_ok"), 4) for a in ("shape", "colour", "size", "position", "all")}
    record = {"steps": args.steps, "images": args.images, "unet_minutes": round(minutes, 1), "eval_prompts": args.eval,
              "unet_parameters": sum(p.numel() for p in unet.parameters()), **evaluate.conditions(), "accuracy": rows}
    (out / "probe.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
