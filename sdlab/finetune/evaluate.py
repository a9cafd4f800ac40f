"""Measuring a fine-tune: what it learned, how far it generalises, what it broke, at what cost.

Every figure is the same recipe: generate a table of prompts (one seed each) with a
pipeline, score the images with a ``score(images, table) -> DataFrame`` callable
handed in (the shapes world's checker, in the notebook and benchmark), and average
a column. The pipelines are the methods' ``apply`` results (new pipeline objects),
so measuring never changes the base pipeline either.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..progress import Callback

Score = Callable[[list, pd.DataFrame], pd.DataFrame]


def generate_table(pipe, prompts: pd.DataFrame, score: Score, steps: int | None = None, guidance: float | None = None,
                   callback: Callback | None = None) -> pd.DataFrame:
    """``prompts`` (columns ``prompt``, ``seed`` and the attributes a right image has) with the scorer's columns."""
    from ..generate import generate_many
    from ..spec import GenerationSpec

    specs = [GenerationSpec(str(r.prompt), seed=int(r.seed), steps=steps, guidance=guidance) for r in prompts.itertuples()]
    results = generate_many(pipe, specs, callback=callback)
    table = prompts.reset_index(drop=True)
    scored = score([np.asarray(im.convert("RGB")) for im, _ in results], table)
    return pd.concat([table, scored.reset_index(drop=True)], axis=1)


def share(table: pd.DataFrame, column: str, by: str | None = None) -> pd.Series | float:
    """Mean of a boolean column (overall, or per value of ``by``)."""
    values = table[column].astype(float)
    return float(values.mean()) if by is None else values.groupby(table[by]).mean()


def paired_drop(before, after) -> dict:
    """How much a fine-tune lost on the same prompts and seeds: ``before``/``after`` are one boolean per prompt
    (right or not). The drop is their mean difference; its standard error counts only the prompts that changed
    (``lost``: right before, wrong after; ``gained``: the reverse), as a paired design allows, so a drop can be
    told from the noise of a few hundred prompts."""
    before, after = np.asarray(before, bool), np.asarray(after, bool)
    if before.shape != after.shape or before.ndim != 1 or not len(before):
        from ..validation import invalid

        raise invalid("after", f"{after.shape} results", f"one per prompt of before ({before.shape[0] if before.ndim else 0})")
    n, lost, gained = len(before), int((before & ~after).sum()), int((~before & after).sum())
    drop = (lost - gained) / n
    se = float(np.sqrt(max(lost + gained - (lost - gained) ** 2 / n, 0.0) / (n * (n - 1)))) if n > 1 else float("nan")
    return {"drop": drop, "se": se, "lost": lost, "gained": gained, "n": n}


def strength_sweep(make_pipe: Callable[[float], object], prompts: pd.DataFrame, score: Score, column: str = "concept_ok",
                   strengths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)) -> pd.DataFrame:
    """``column``'s share at each strength; ``make_pipe(strength)`` builds the pipeline (a LoRA's or hypernetwork's)."""
    rows = []
    for s in strengths:
        table = generate_table(make_pipe(s), prompts, score)
        rows.append({"strength": s, column: share(table, column), "all_ok": share(table, "all_ok")})
    return pd.DataFrame(rows)


def file_size(path: str | Path) -> int:
    """Bytes of a file, or of every file under a directory."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def conditions() -> dict:
    """What the figures were measured under: load average, cores, torch threads, time."""
    import torch

    return {"load_1min": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def tidy(rows: list[dict]) -> pd.DataFrame:
    """One row per method x concept x data set, in the column order the notebook shows."""
    first = ["method", "concept", "data", "success_seen", "success_held_out", "base_all_five", "base_drop",
             "class_word_drift", "minutes", "file_kb"]
    table = pd.DataFrame(rows)
    return table[[c for c in first if c in table] + [c for c in table if c not in first]]
