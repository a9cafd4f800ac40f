"""Precision and resolution on the shapes world, measured: the figures notebook 11 and the README quote.

1. dtypes: the same evaluation prompts and seeds in fp32, bf16 and fp16, each dtype in its own
   process (sdlab.precision.measure_dtypes): pixel difference against fp32 (uint8 levels), the
   checker's accuracy, seconds per image, peak resident memory;
2. sizes: the same prompts at 64 (native), 96, 128, 192 and 128x64, directly and with the hires fix
   from 64 (sdlab.resolution.measure_sizes): duplicated shapes, the checker's accuracy, seconds.

Timings depend on the machine's load, printed beside them. Usage:
    python benchmarks/bench_precision.py [--n 8] [--dtypes fp32,bf16,fp16] [--hires-strength 0.3,0.5] [--skip-sizes] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import pandas as pd

from sdlab.generate import generate, native_size
from sdlab.mini import world
from sdlab.mini.metrics import checker_metric
from sdlab.mini.resolution import size_metric
from sdlab.models import load_pipeline
from sdlab.precision import measure_dtypes
from sdlab.precision import summarize as summarize_dtypes
from sdlab.resolution import measure_sizes
from sdlab.resolution import summarize as summarize_sizes
from sdlab.spec import GenerationSpec

COLUMNS_DTYPES = ["dtype", "images", "seconds_per_image", "rss_before_load_mb", "peak_rss_mb", "mean_abs_diff", "max_abs_diff",
                  "blank", "all_ok", "shape_ok", "colour_ok", "size_ok", "position_ok"]
COLUMNS_SIZES = ["method", "width", "height", "strength", "images", "seconds_per_image", "shapes", "duplicated", "all_ok", "shape_ok",
                 "colour_ok", "size_ok", "position_ok"]


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def specs(n: int, steps: int | None) -> list[GenerationSpec]:
    prompts = world.evaluation_prompts(n)
    return [GenerationSpec(row.prompt, seed=int(row.seed), steps=steps) for row in prompts.itertuples()]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="evaluation prompts (each with its own seed)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    parser.add_argument("--dtypes", default="fp32,bf16,fp16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="64,96,128,192,128x64")
    parser.add_argument("--hires-strength", default="0.3,0.5", help="one or more denoising strengths for the hires fix")
    parser.add_argument("--hires-steps", type=int, default=12)
    parser.add_argument("--skip-dtypes", action="store_true")
    parser.add_argument("--skip-sizes", action="store_true")
    parser.add_argument("--skip-direct", action="store_true", help="sizes: the hires fix only (direct figures already measured)")
    parser.add_argument("--json", help="also write the tables here")
    args = parser.parse_args(argv)
    pd.set_option("display.width", 200, "display.max_columns", 30, "display.precision", 3)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {load()}")
    out: dict = {"n": args.n, "steps": args.steps, "load_before": load()}
    if not args.skip_dtypes:
        started = time.perf_counter()
        table = measure_dtypes("shapes-world", specs(args.n, args.steps), tuple(args.dtypes.split(",")), device=args.device,
                               measure=checker_metric)
        summary = summarize_dtypes(table)
        summary = summary[[c for c in COLUMNS_DTYPES if c in summary.columns]]
        print(f"\n1. dtypes ({args.n} prompts x 1 seed, {time.perf_counter() - started:.0f} s; {load()})")
        print(summary.to_string(index=False))
        out["dtypes"] = summary.to_dict(orient="records")
    if not args.skip_sizes:
        started = time.perf_counter()
        pipe = load_pipeline("shapes-world", device=args.device)
        generate(pipe, GenerationSpec("a red circle", seed=0, steps=1))  # warm-up: one-time costs stay out of the first size
        sizes = [tuple(int(v) for v in s.split("x")) if "x" in s else int(s) for s in args.sizes.split(",")]
        tables = [measure_sizes(pipe, specs(args.n, args.steps), sizes, size_metric, direct=i == 0 and not args.skip_direct,
                                hires={"strength": float(strength), "upscaler": "lanczos", "steps": args.hires_steps})
                  for i, strength in enumerate(args.hires_strength.split(","))]
        summary = summarize_sizes(pd.concat(tables, ignore_index=True))[COLUMNS_SIZES]
        print(f"\n2. sizes (native {native_size(pipe)}; hires fix: Lanczos x scale, {args.hires_steps} steps; "
              f"{time.perf_counter() - started:.0f} s; {load()})")
        print(summary.to_string(index=False))
        out["sizes"] = summary.to_dict(orient="records")
    out["load_after"] = load()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, default=float)
    return out


if __name__ == "__main__":
    main()
