"""Sweeps and traces on the shapes world, against the sweep/explorer issue's targets.

- a guidance sweep of 8 values x 8 seeds, batched vs one call per image, same run: >= 2x faster;
- tracing with linear previews costs <= 10% over plain generation.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, report  # noqa: E402

from sdlab.generate import generate, generate_many  # noqa: E402
from sdlab.models import load_pipeline  # noqa: E402
from sdlab.spec import GenerationSpec  # noqa: E402
from sdlab.trace import trace  # noqa: E402

PROMPT = "a small green cross at the bottom on a pink background"
GUIDANCE = [1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 12.5, 15.0]


def main() -> None:
    pipe = load_pipeline("shapes-world", device="cpu")
    specs = [GenerationSpec(PROMPT, seed=s, guidance=g, steps=25) for g in GUIDANCE for s in range(8)]
    started = time.perf_counter()
    generate_many(pipe, specs, max_batch=64)
    batched = time.perf_counter() - started
    started = time.perf_counter()
    for spec in specs:
        generate(pipe, spec)
    one_by_one = time.perf_counter() - started
    spec = GenerationSpec(PROMPT, seed=1, steps=25)
    plain = best_of(lambda: generate(pipe, spec))
    traced = best_of(lambda: trace(pipe, spec))
    tr = trace(pipe, spec)
    previews = best_of(lambda: [tr.preview(i, "x0", "linear") for i in range(len(tr.steps))], repeat=3)
    report([
        ("guidance sweep 8x8, batched (s)", batched, "(figure)", True),
        ("guidance sweep 8x8, one call per image (s)", one_by_one, "(figure)", True),
        ("speed-up of batching", one_by_one / batched, ">= 2", one_by_one / batched >= 2),
        ("one image, plain generate (s)", plain, "(figure)", True),
        ("one image, traced (s)", traced, "(figure)", True),
        ("tracing overhead incl. 25 linear previews", (traced + previews) / plain - 1, "<= 0.10", (traced + previews) / plain - 1 <= 0.10),
    ])


if __name__ == "__main__":
    main()
