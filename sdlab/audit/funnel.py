"""The filter funnel: how many rows survive each of Stable Diffusion's data-selection filters in turn.

SD 1.x trained on LAION-Aesthetics v2 5+ with high-watermark-probability and
unsafe images removed and, for later stages, images of at least 512 px. Each
threshold is a parameter; a stage whose column is absent is reported as not
available and skipped, never an error.
"""
from __future__ import annotations

import pandas as pd

from ..progress import Callback, Reporter
from ..validation import NON_NEGATIVE_INT, UNIT, Interval, validate_params
from .dataset import Dataset
from .expr import and_, col, ge, least, lt, num
from .results import AuditResult
from .schema import not_available

CONSTRAINTS = {"aesthetic_min": [Interval(float)], "pwatermark_max": [UNIT], "punsafe_max": [UNIT],
               "min_side": [NON_NEGATIVE_INT]}


def funnel(ds: Dataset, aesthetic_min: float = 5.0, pwatermark_max: float = 0.5, punsafe_max: float = 0.1,
           min_side: int = 512, callback: Callback | None = None, progress: bool = False) -> AuditResult:
    """Rows kept after each stage: aesthetic >= ``aesthetic_min``, pwatermark < ``pwatermark_max``,
    punsafe < ``punsafe_max``, short side >= ``min_side``. A row with a missing value fails that stage."""
    validate_params({"aesthetic_min": aesthetic_min, "pwatermark_max": pwatermark_max, "punsafe_max": punsafe_max,
                     "min_side": min_side}, CONSTRAINTS)
    reason = not_available("funnel", ds.columns)
    if reason:
        return AuditResult.not_available("funnel", reason)
    stages = [
        ("aesthetic", f"AESTHETIC_SCORE >= {aesthetic_min:g}", ("AESTHETIC_SCORE",), ge(num(col("AESTHETIC_SCORE")), aesthetic_min)),
        ("watermark", f"pwatermark < {pwatermark_max:g}", ("pwatermark",), lt(num(col("pwatermark")), pwatermark_max)),
        ("unsafe", f"punsafe < {punsafe_max:g}", ("punsafe",), lt(num(col("punsafe")), punsafe_max)),
        ("size", f"min(WIDTH, HEIGHT) >= {min_side}", ("WIDTH", "HEIGHT"),
         ge(least(num(col("WIDTH")), num(col("HEIGHT"))), min_side)),
    ]
    applied, conditions, notes = [], {}, []
    for name, text, needs, cond in stages:
        if all(c in ds.columns for c in needs):
            applied.append(cond)
            conditions[name] = and_(*applied)
        else:
            notes.append(f"{name} ({text}): not available, needs {' and '.join(needs)}")
    with Reporter(callback, progress, "funnel") as report:
        counts = ds.engine.count_where(conditions, callback=report)
    rows = counts["rows"]
    records = [{"stage": "all rows", "condition": "", "available": True, "rows_kept": rows}]
    for name, text, _, _ in stages:
        records.append({"stage": name, "condition": text, "available": name in conditions,
                        "rows_kept": counts.get(name)})
    table = pd.DataFrame(records)
    kept = table["rows_kept"].astype("Float64")
    table["share_of_all"] = kept / max(rows, 1)
    previous = kept.where(table["available"]).ffill().shift(1)
    table["share_of_previous"] = kept / previous
    final = int(table.loc[table["available"], "rows_kept"].iloc[-1])
    stats = {"rows": rows, "rows_kept": final, "share_kept": final / max(rows, 1),
             "stages_applied": len(conditions)}
    return AuditResult("funnel", table, stats=stats, notes=notes)
