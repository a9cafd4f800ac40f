"""Caption bias: how often terms of one list (occupations) appear with terms of another (gendered words).

In the spirit of Stable Bias (Luccioni et al. 2023), but on the training
captions: if "nurse" captions say "woman" nine times in ten, a model learns
that. Counts come from the engine as caption *patterns* (which term groups a
caption mentions); bootstrap resamples of captions are multinomial draws over
those patterns, which is exact and needs no second pass over the data.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ..progress import Callback, Reporter
from ..validation import SEED, Interval, validate_params
from .dataset import Dataset
from .expr import col, matches, not_null
from .results import AuditResult
from .schema import not_available
from .terms import TermLists, load_terms, term_regex

CONSTRAINTS = {"n_boot": [Interval(int, 10, 100_000)],  # more resamples change no interval; 10^9 would not fit in memory
                "seed": [SEED], "confidence": [Interval(float, 0, 1, closed="neither")]}


def _bootstrap(counts: np.ndarray, indicators: dict[str, np.ndarray], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Resample captions ``n_boot`` times (multinomial over patterns); return summed counts per indicator."""
    total = int(counts.sum())
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(total, counts / max(total, 1), size=n_boot) if total else np.zeros((n_boot, len(counts)))
    return {k: draws @ v.astype(np.int64) for k, v in indicators.items()}


def caption_terms(ds: Dataset, rows: str | os.PathLike | TermLists = "occupations",
                  columns: str | os.PathLike | TermLists = "gender", n_boot: int = 1000, seed: int = 0,
                  confidence: float = 0.95, callback: Callback | None = None, progress: bool = False) -> AuditResult:
    """Co-occurrence of ``rows`` term groups with ``columns`` term groups in captions, with bootstrap CIs.

    ``table`` (tidy): row_group, column_group, captions (mention both),
    row_captions (mention the row group at all), share (of the row group's
    captions that mention any column group, the ones that are split), ci_low, ci_high.
    """
    validate_params({"n_boot": n_boot, "seed": seed, "confidence": confidence}, CONSTRAINTS)
    reason = not_available("captions", ds.columns)
    if reason:
        return AuditResult.not_available("captions", reason)
    row_terms, col_terms = load_terms(rows, "rows"), load_terms(columns, "columns")
    keys = {f"r{i}": matches(col("TEXT"), term_regex(t)) for i, t in enumerate(row_terms.values())}
    keys |= {f"c{j}": matches(col("TEXT"), term_regex(t)) for j, t in enumerate(col_terms.values())}
    with Reporter(callback, progress, "captions") as report:
        patterns = ds.engine.group_count(keys, where=not_null(col("TEXT")), callback=report)
    counts = patterns["count"].to_numpy(np.int64)
    R = patterns[[f"r{i}" for i in range(len(row_terms))]].to_numpy(bool)
    C = patterns[[f"c{j}" for j in range(len(col_terms))]].to_numpy(bool)
    any_c = C.any(axis=1)
    indicators: dict[str, np.ndarray] = {}
    for i in range(len(row_terms)):
        indicators[f"r{i}"] = R[:, i]
        indicators[f"r{i}_any"] = R[:, i] & any_c
        for j in range(len(col_terms)):
            indicators[f"r{i}c{j}"] = R[:, i] & C[:, j]
    for j in range(len(col_terms)):
        indicators[f"c{j}"] = C[:, j]
    observed = {k: int(counts @ v.astype(np.int64)) for k, v in indicators.items()}
    boot = _bootstrap(counts, indicators, n_boot, seed)
    alpha = (1 - confidence) / 2
    total = int(counts.sum())

    records = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for i, rg in enumerate(row_terms):
            for j, cg in enumerate(col_terms):
                both, split = observed[f"r{i}c{j}"], observed[f"r{i}_any"]
                shares = boot[f"r{i}c{j}"] / boot[f"r{i}_any"]
                shares = shares[np.isfinite(shares)]
                records.append({
                    "row_group": rg, "column_group": cg, "captions": both, "row_captions": observed[f"r{i}"],
                    "row_captions_with_column_term": split,
                    "share": both / split if split else np.nan,
                    "ci_low": float(np.quantile(shares, alpha)) if len(shares) else np.nan,
                    "ci_high": float(np.quantile(shares, 1 - alpha)) if len(shares) else np.nan,
                })
    table = pd.DataFrame(records)
    term_records = []
    for kind, groups, prefix in (("rows", row_terms, "r"), ("columns", col_terms, "c")):
        for k, g in enumerate(groups):
            share_b = boot[f"{prefix}{k}"] / max(total, 1)
            term_records.append({"list": kind, "group": g, "captions": observed[f"{prefix}{k}"],
                                 "share": observed[f"{prefix}{k}"] / max(total, 1),
                                 "ci_low": float(np.quantile(share_b, alpha)), "ci_high": float(np.quantile(share_b, 1 - alpha))})
    stats = {"captions": total, "n_boot": n_boot, "confidence": confidence,
             "captions_with_row_term": int(counts @ R.any(axis=1)), "captions_with_column_term": int(counts @ any_c)}
    notes = ["share = captions with both / captions with the row term and any column term; "
             f"{confidence:.0%} percentile bootstrap over captions ({n_boot} resamples)"]
    return AuditResult("captions", table, stats=stats, tables={"terms": pd.DataFrame(term_records)}, notes=notes)
