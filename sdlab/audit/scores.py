"""Score columns LAION ships with every row: aesthetic score, watermark and NSFW probabilities, CLIP similarity.

Their distributions say how much a threshold on each removes, which is what
the filter funnel (funnel.py) applies in sequence.
"""
from __future__ import annotations

import pandas as pd

from ..progress import Callback, Reporter
from .dataset import Dataset
from .expr import bin_, col, ge, num
from .results import AuditResult
from .schema import not_available

# column -> (low edge, bin width, bins, thresholds reported as "share >= t")
SCORES: dict[str, tuple[float, float, int, tuple[float, ...]]] = {
    "AESTHETIC_SCORE": (0.0, 0.25, 40, (5.0, 6.0)),
    "pwatermark": (0.0, 0.05, 20, (0.5, 0.8)),
    "punsafe": (0.0, 0.05, 20, (0.1, 0.5)),
    "similarity": (0.0, 0.01, 50, (0.28, 0.3)),
}


def scores(ds: Dataset, callback: Callback | None = None, progress: bool = False) -> AuditResult:
    """Histogram of each score column present (tidy: column, bin, count, share) and the shares at/above thresholds."""
    reason = not_available("scores", ds.columns)
    if reason:
        return AuditResult.not_available("scores", reason)
    present = [c for c in SCORES if c in ds.columns]
    notes = [f"{c}: not available" for c in SCORES if c not in ds.columns]
    frames, stats = [], {}
    with Reporter(callback, progress, "scores") as report:
        for i, name in enumerate(present):
            lo, width, n, thresholds = SCORES[name]
            x = num(col(name))
            keys = {"bin": bin_(x, lo, width, n), **{f"ge_{t:g}": ge(x, t) for t in thresholds}}
            cells = ds.engine.group_count(keys)
            report(i + 1, len(present))
            rows = int(cells["count"].sum())
            known = cells[cells["bin"].notna()]
            valued = int(known["count"].sum())
            hist = known.groupby("bin", as_index=False)["count"].sum()
            frame = pd.DataFrame({
                "column": name,
                "bin_from": lo + hist["bin"].astype(int) * width,
                "bin_to": lo + (hist["bin"].astype(int) + 1) * width,
                "count": hist["count"],
            })
            frame["share"] = frame["count"] / max(valued, 1)
            frames.append(frame)
            stats[f"{name}_rows_with_value"] = valued
            stats[f"{name}_missing"] = rows - valued
            for t in thresholds:
                stats[f"{name}_share_ge_{t:g}"] = int(cells.loc[cells[f"ge_{t:g}"], "count"].sum()) / max(valued, 1)
    notes.append("histogram ends are open: values below the first bin or above the last are counted in it")
    return AuditResult("scores", pd.concat(frames, ignore_index=True), stats=stats, notes=notes)
