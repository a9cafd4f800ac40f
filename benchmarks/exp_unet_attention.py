"""Experiment (issues 23 and 24): does a shapes-world UNet with attention at 16x16 forget less when a LoRA learns the star?

The shipped UNet (v5) has cross-attention at 8x8 and 4x4 only; it draws shapes at 16x16 with convolutions, so a new
shape is new convolution weights that every prompt passes through, and every star LoRA measured so far cost the base
model 16 points or more. Here the shipped UNet is given cross-attention at 16x16 too, by surgery: a UNet with
attention at every level takes every shipped weight, its new transformers' output projections start at zero (so it
draws exactly what the shipped one draws), and it is trained on for ``--steps`` against the shipped VAE and text
encoder (frozen, as in the shipped run). A UNet with attention at every level trained from scratch took 2 s a step
here (the shipped recipe's 11000 steps: 6 hours), hence the surgery. The result is exported under ``--out`` and
measured with ``sdlab mini eval``'s prompts; then ``bench_finetune.py --model OUT/pipeline --cells ...`` trains the
same LoRA cells on it as on the shipped model.

    python benchmarks/exp_unet_attention.py [--steps 800 --batch 32 --lr 2e-4 --out runs/v6probe --eval 160]

A probe, not a release: a model to ship is ``sdlab mini train`` from scratch, and its ControlNets must be retrained.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from sdlab.finetune import evaluate
from sdlab.mini import checker, world
from sdlab.mini.config import TrainConfig
from sdlab.mini.data import encode_latents, prepare_data
from sdlab.mini.export import export_pipeline, fit_preview_factors
from sdlab.mini.model import ModelConfig, build_unet
from sdlab.mini.stages.unet import train_unet
from sdlab.models import load_pipeline


def with_attention(unet, model: ModelConfig):
    """A UNet of ``model``'s layout holding every weight of ``unet``; the transformers it lacks add exactly 0."""
    grown = build_unet(model)
    missing, unexpected = grown.load_state_dict(unet.state_dict(), strict=False)
    assert not unexpected and all(".attentions." in k for k in missing), (unexpected, missing[:5])
    new = {k.rsplit(".proj_out.", 1)[0] for k in missing if ".proj_out." in k}
    with torch.no_grad():
        for name, module in grown.named_modules():
            if name in new:
                module.proj_out.weight.zero_()
                module.proj_out.bias.zero_()
        z, t, context = torch.randn(2, 4, 16, 16), torch.tensor([10, 900]), torch.randn(2, 77, unet.config.cross_attention_dim)
        assert torch.equal(grown(z, t, context).sample, unet(z, t, context).sample), "the grown UNet must start as the shipped one"
    return grown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=800, help="UNet steps after the surgery (the shipped model: 11000 from scratch)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4, help="peak lr, cosine to a tenth (the shipped model: 5e-4)")
    ap.add_argument("--images", type=int, default=40_000, help="training images (the shipped model: 40000)")
    ap.add_argument("--out", default="runs/v6probe")
    ap.add_argument("--eval", type=int, default=160, help="evaluation prompts (world.evaluation_prompts)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = dataclasses.replace(ModelConfig(), unet_attention=(True, True, True))
    cfg = dataclasses.replace(TrainConfig(), unet_steps=args.steps, unet_batch=args.batch, unet_lr=args.lr, warmup_steps=50,
                              n_images=args.images, model=model)
    shipped = load_pipeline("shapes-world", device="cpu")
    started = time.time()
    images, meta = prepare_data(out, cfg)
    with torch.no_grad():
        scaled = encode_latents(out, shipped.vae, images, progress=False) * shipped.vae.config.scaling_factor
    unet, text = train_unet(out, scaled, meta["TEXT"].tolist(), shipped.tokenizer, shipped.text_encoder, cfg, progress=False, images=images,
                            init=with_attention(shipped.unet, model))
    minutes = (time.time() - started) / 60
    target = export_pipeline(out, shipped.vae, text, unet, shipped.tokenizer, fit_preview_factors(scaled, images), cfg)
    rows = {}
    for name, pipe in (("shipped v5", shipped), ("attention at every level", load_pipeline(str(target), device="cpu"))):
        table = evaluate.generate_table(pipe, world.evaluation_prompts(args.eval), checker.score)
        rows[name] = {a: round(evaluate.share(table, f"{a}_ok"), 4) for a in ("shape", "colour", "size", "position", "all")}
    record = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "images": args.images, "unet_minutes": round(minutes, 1), "eval_prompts": args.eval,
              "unet_parameters": sum(p.numel() for p in unet.parameters()), **evaluate.conditions(), "accuracy": rows}
    (out / "probe.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
