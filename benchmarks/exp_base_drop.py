"""Experiment (issue 23): what a LoRA costs the base model, on more prompts than the benchmark's, with its paired error.

``bench_finetune.py`` measures the base all-five accuracy on 160 of the world's evaluation prompts: one prompt is
0.6 points and a drop of 2-5 points carries a standard error near 2, too coarse for the issue's 3-point target.
This script measures the base model once and each LoRA file on the same ``--n`` prompts and seeds, and prints
the drop with its paired standard error (:func:`sdlab.finetune.evaluate.paired_drop`).

    python benchmarks/exp_base_drop.py --n 480 runs/finetune/bench/lora-star-cosine-keep-all/lora.safetensors ...
"""
from __future__ import annotations

import argparse
import json
import os

import torch

from _common import with_lora_file
from sdlab.finetune import evaluate
from sdlab.mini import checker, world
from sdlab.models import load_pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("loras", nargs="+", help="LoRA files in diffusers' format")
    ap.add_argument("--n", type=int, default=480, help="evaluation prompts (default 480)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    pipe = load_pipeline("shapes-world")
    prompts = world.evaluation_prompts(args.n)
    base = evaluate.generate_table(pipe, prompts, checker.score)["all_ok"].astype(bool)
    print(json.dumps({"model": "base", "n": args.n, "all_five": round(float(base.mean()), 4), **evaluate.conditions()}), flush=True)
    for path in args.loras:
        tuned = evaluate.generate_table(with_lora_file(pipe, path), prompts, checker.score)["all_ok"].astype(bool)
        print(json.dumps({"model": path, "all_five": round(float(tuned.mean()), 4),
                          **{k: round(v, 4) if isinstance(v, float) else v for k, v in evaluate.paired_drop(base, tuned).items()}}),
              flush=True)


if __name__ == "__main__":
    main()
