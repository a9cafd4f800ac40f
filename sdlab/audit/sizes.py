"""Image sizes: how much of the data is big enough to train at 512 px, and its aspect ratios.

Stable Diffusion's later stages kept images whose short side is at least 512
px; the share that passes says how much a resolution filter throws away.
"""
from __future__ import annotations

import pandas as pd

from ..progress import Callback, Reporter
from ..validation import POSITIVE_INT, validate_params
from .dataset import Dataset
from .expr import bin_, col, ge, least, num, ratio
from .results import AuditResult
from .schema import not_available

SIDE_BIN = 64  # px
SIDE_BINS = 33  # 0-63 … 1984-2047, and one bin for >= 2048
ASPECT_BIN = 0.25  # width / height
ASPECT_BINS = 16  # 0-0.25 … and one bin for >= 3.75


def sizes(ds: Dataset, min_side: int = 512, callback: Callback | None = None, progress: bool = False) -> AuditResult:
    """Short-side histogram (64 px bins), aspect-ratio histogram, and the share with short side >= ``min_side``."""
    validate_params({"min_side": min_side}, {"min_side": [POSITIVE_INT]})
    reason = not_available("sizes", ds.columns)
    if reason:
        return AuditResult.not_available("sizes", reason)
    w, h = num(col("WIDTH")), num(col("HEIGHT"))
    short = least(w, h)
    with Reporter(callback, progress, "sizes") as report:
        cells = ds.engine.group_count({
            "side_bin": bin_(short, 0, SIDE_BIN, SIDE_BINS),
            "aspect_bin": bin_(ratio(w, h), 0, ASPECT_BIN, ASPECT_BINS),
            "big_enough": ge(short, min_side),
        }, callback=report)
    rows = int(cells["count"].sum())
    known = cells[cells["side_bin"].notna()]
    with_size = int(known["count"].sum())

    side = known.groupby("side_bin", as_index=False)["count"].sum()
    side["side_bin"] = side["side_bin"].astype(int)
    table = pd.DataFrame({
        "short_side_from_px": side["side_bin"] * SIDE_BIN,
        "short_side_to_px": [(b + 1) * SIDE_BIN if b < SIDE_BINS - 1 else None for b in side["side_bin"]],
        "count": side["count"],
    })
    table["share"] = table["count"] / max(with_size, 1)

    aspect = cells[cells["aspect_bin"].notna()].groupby("aspect_bin", as_index=False)["count"].sum()
    aspect["aspect_bin"] = aspect["aspect_bin"].astype(int)
    aspect_table = pd.DataFrame({
        "aspect_from": aspect["aspect_bin"] * ASPECT_BIN,
        "aspect_to": [(b + 1) * ASPECT_BIN if b < ASPECT_BINS - 1 else None for b in aspect["aspect_bin"]],
        "count": aspect["count"],
    })
    aspect_table["share"] = aspect_table["count"] / max(int(aspect_table["count"].sum()), 1)

    big = int(cells.loc[cells["big_enough"], "count"].sum())
    stats = {
        "rows": rows,
        "rows_with_size": with_size,
        "min_side": min_side,
        "rows_short_side_ge_min": big,
        "share_short_side_ge_min": big / max(with_size, 1),
        "share_landscape": float(aspect_table.loc[aspect_table["aspect_from"] >= 1.0, "count"].sum() / max(aspect_table["count"].sum(), 1)),
    }
    notes = [f"share_short_side_ge_min is of the {with_size} rows with a width and height"]
    if with_size < rows:
        notes.append(f"{rows - with_size} rows lack a usable width or height")
    return AuditResult("sizes", table, stats=stats, tables={"aspect": aspect_table}, notes=notes)
