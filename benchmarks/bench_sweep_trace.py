"""Sweeps and traces on the shapes world, against the sweep/explorer issue's targets, and a sweep on a cluster.

- a guidance sweep of 8 values x 8 seeds, batched vs one call per image, same run: >= 2x faster;
- tracing with linear previews costs <= 10% over plain generation;
- the same 64-cell sweep (``run_sweep``, store included) on 2 single-thread Dask worker
  processes vs 1 process with 2 torch threads vs 1 process with 1 thread: seconds and
  images/s of each (all warm: the model loaded and a small sweep run before timing; the
  cluster's start and the loads are printed apart), and whether the cluster's images equal the
  1-thread process's.

``--cluster-only`` runs the last part alone.
"""
from __future__ import annotations

import sys
import tempfile
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


def batching_and_tracing(pipe) -> list[tuple]:
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
    return [
        ("guidance sweep 8x8, batched (s)", batched, "(figure)", True),
        ("guidance sweep 8x8, one call per image (s)", one_by_one, "(figure)", True),
        ("speed-up of batching", one_by_one / batched, ">= 2", one_by_one / batched >= 2),
        ("one image, plain generate (s)", plain, "(figure)", True),
        ("one image, traced (s)", traced, "(figure)", True),
        ("tracing overhead incl. 25 linear previews", (traced + previews) / plain - 1, "<= 0.10", (traced + previews) / plain - 1 <= 0.10),
    ]


def sweep_on_a_cluster(pipe) -> list[tuple]:
    """The same 64-cell sweep three ways, each into a fresh store."""
    import logging

    import numpy as np
    import pandas as pd
    import torch
    from distributed import Client, LocalCluster
    from PIL import Image

    from sdlab.cluster import ModelSource, preload
    from sdlab.sweep import Axis, run_sweep

    base = GenerationSpec(PROMPT, steps=25)
    axes = [Axis.parse("seed=1-8"), Axis.parse("cfg=" + ",".join(f"{g:g}" for g in GUIDANCE))]
    root = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    seconds = {}

    def timed(name, model, **kwargs):
        started = time.perf_counter()
        run_sweep(model, base, axes, root / name, progress=False, **kwargs)
        seconds[name] = time.perf_counter() - started

    def warm_up(model, **kwargs):  # first calls pay one-off costs; both workers get batches
        run_sweep(model, base.replace(steps=2), [Axis.parse("seed=1-4")], root / f"warm-up-{len(seconds)}", max_batch=1, progress=False, **kwargs)

    threads = torch.get_num_threads()
    warm_up(pipe)
    for n in (1, 2):
        torch.set_num_threads(n)
        timed(f"1 process, {n} thread{'s' if n > 1 else ''}", pipe)
    torch.set_num_threads(threads)
    started = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster, set_as_default=False) as client:
        up = time.perf_counter() - started
        started = time.perf_counter()
        preload(client, ModelSource("shapes-world", device="cpu"))
        loaded = time.perf_counter() - started
        warm_up(ModelSource("shapes-world", device="cpu"), cluster=client)
        timed("2 worker processes, 1 thread each", ModelSource("shapes-world", device="cpu"), cluster=client)

    def pixels(name):
        table = pd.read_parquet(root / name / "results.parquet").sort_values("cell")
        return np.stack([np.asarray(Image.open(root / name / f), np.int16) for f in table["file"]])

    same = int(np.abs(pixels("2 worker processes, 1 thread each") - pixels("1 process, 1 thread")).max())
    rows = [("cluster start, 2 workers (s)", up, "(figure)", True), ("model load on both workers (s)", loaded, "(figure)", True)]
    for name, s in seconds.items():
        rows += [(f"64-cell sweep, {name} (s)", s, "(figure)", True), (f"64-cell sweep, {name} (images/s)", 64 / s, "(figure)", True)]
    rows.append(("max pixel difference, cluster vs 1 process 1 thread", same, "0", same == 0))
    return rows


def main() -> None:
    pipe = load_pipeline("shapes-world", device="cpu")
    rows = [] if "--cluster-only" in sys.argv else batching_and_tracing(pipe)
    report(rows + sweep_on_a_cluster(pipe))


if __name__ == "__main__":
    main()
