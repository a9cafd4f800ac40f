"""Figures for audit results: one builder per analysis, labelled axes with units.

Kept apart from the analyses so core results never need matplotlib, and so
the CLI, widget and notebooks draw the same pictures.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

BAIO_TOP100 = 0.47  # Baio: 47% of LAION-Aesthetics 6+ images come from 100 domains
BAIO_PINTEREST = 0.085


def _figure(width: float = 6.0, height: float = 4.0, ncols: int = 1):
    """A pyplot-free Figure: safe in threads and headless, never leaks into pyplot's state."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, (fig.subplots(1, ncols, squeeze=False)[0] if ncols > 1 else fig.subplots())


def _label(ax, x: str, y: str, title: str) -> None:
    """Axis labels (with units) and title: every figure has all three."""
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)


def _error(t, share: str = "share"):
    """Error bars in percent from ``ci_low``/``ci_high`` around ``share``; never negative, even when rounding
    puts a share of 1.0 a hair above its bound."""
    return np.vstack([t[share] - t["ci_low"], t["ci_high"] - t[share]]).clip(0) * 100


def _domains(r) -> dict[str, Any]:
    t = r.table
    figs = {}
    fig, ax = _figure()
    ax.loglog(t["rank"], t["share"] * 100, marker=".", linestyle="none", markersize=3)
    _label(ax, "domain rank (1 = most rows)", "share of rows (%)", f"Rank–share of {len(t)} registrable domains")
    for _, row in t.head(3).iterrows():
        ax.annotate(row["domain"], (row["rank"], row["share"] * 100), fontsize=7, xytext=(4, 0), textcoords="offset points")
    figs["rank_share"] = fig

    fig, ax = _figure()
    ax.plot(t["rank"], t["cumulative_share"] * 100)
    ax.set_xscale("log")
    ax.axvline(100, color="grey", linestyle=":", linewidth=1)
    top100 = r.stats.get("top100_share", np.nan) * 100
    ax.axhline(top100, color="C1", linestyle="--", linewidth=1, label=f"this data: top 100 = {top100:.1f}%")
    ax.axhline(BAIO_TOP100 * 100, color="C2", linestyle="--", linewidth=1, label="Baio (LAION-Aesthetics 6+): 47%")
    _label(ax, "number of largest domains (log scale)", "cumulative share of rows (%)", "How few domains cover the data")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="lower right")
    figs["coverage"] = fig

    cats = r.tables.get("categories")
    if cats is not None and len(cats):
        fig, ax = _figure()
        c = cats.iloc[::-1]
        ax.barh(c["category"], c["share"] * 100)
        _label(ax, "share of rows (%)", "domain category", "Rows by category of the curated largest domains")
        figs["categories"] = fig
    return figs


def _sizes(r) -> dict[str, Any]:
    figs = {}
    t = r.table
    fig, ax = _figure()
    ax.bar(t["short_side_from_px"], t["share"] * 100, width=60, align="edge")
    ax.axvline(r.stats["min_side"], color="C1", linestyle="--", label=f"{r.stats['min_side']} px")
    _label(ax, "short side of the image (px, 64 px bins; last bin open)", "share of images with a size (%)",
           f"{r.stats['share_short_side_ge_min']:.1%} have short side ≥ {r.stats['min_side']} px")
    ax.legend()
    figs["short_side"] = fig
    a = r.tables["aspect"]
    fig, ax = _figure()
    ax.bar(a["aspect_from"], a["share"] * 100, width=0.23, align="edge")
    _label(ax, "aspect ratio width / height (0.25 bins; last bin open)", "share of images (%)", "Aspect ratios")
    figs["aspect"] = fig
    return figs


def _scores(r) -> dict[str, Any]:
    t = r.table
    names = list(dict.fromkeys(t["column"]))
    fig, axes = _figure(4 * len(names), 3.5, ncols=max(len(names), 2))
    for ax in axes[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes, names):
        part = t[t["column"] == name]
        ax.bar(part["bin_from"], part["share"] * 100, width=(part["bin_to"] - part["bin_from"]) * 0.9, align="edge")
        _label(ax, f"{name} (score)", "share of rows with a value (%)", name)
    return {"histograms": fig}


def _funnel(r) -> dict[str, Any]:
    t = r.table[r.table["available"]]
    fig, ax = _figure()
    labels = [s if not c else f"{s}\n{c}" for s, c in zip(t["stage"], t["condition"])]
    ax.bar(range(len(t)), t["rows_kept"].astype(float))
    ax.set_xticks(range(len(t)), labels, fontsize=7)
    _label(ax, "filter stage (applied in order)", "rows kept (count)",
           f"Filter funnel: {r.stats['share_kept']:.1%} of rows kept")
    return {"funnel": fig}


def _languages(r) -> dict[str, Any]:
    t = r.table.head(15).iloc[::-1]
    fig, ax = _figure()
    err = _error(t)
    ax.barh(t["language"], t["share"] * 100, xerr=err, capsize=2)
    _label(ax, "share of captions (%, 95% CI)", "language (ISO 639-1)", "Caption languages")
    figs = {"languages": fig}
    s = r.tables["speakers"].head(12)
    fig, ax = _figure(7, 4)
    x = np.arange(len(s))
    ax.bar(x - 0.2, s["share"] * 100, width=0.4, label="share of captions")
    ax.bar(x + 0.2, s["world_share"] * 100, width=0.4, label="share of people who speak it")
    ax.set_xticks(x, s["language"])
    _label(ax, "language (ISO 639-1)", "share (%)", "Data vs the world's speakers (L1+L2, approximate)")
    ax.legend(fontsize=8)
    figs["speakers"] = fig
    return figs


def _captions(r) -> dict[str, Any]:
    t = r.table[r.table["row_captions_with_column_term"] > 0]
    groups = list(dict.fromkeys(t["column_group"]))
    rows = list(dict.fromkeys(t["row_group"]))
    fig, ax = _figure(6, max(3, 0.3 * len(rows) + 1))
    height = 0.8 / max(len(groups), 1)
    for k, g in enumerate(groups):
        part = t[t["column_group"] == g].set_index("row_group").reindex(rows)
        y = np.arange(len(rows)) + k * height
        err = _error(part)
        ax.barh(y, part["share"] * 100, height=height, xerr=err, capsize=2, label=g)
    ax.set_yticks(np.arange(len(rows)) + 0.4 - height / 2, rows)
    _label(ax, "share of captions with a gendered term (%, bootstrap CI)", "term group", "Caption co-occurrence")
    ax.set_xlim(0, 100)
    ax.legend(fontsize=8)
    return {"cooccurrence": fig}


def _amplification(r) -> dict[str, Any]:
    t = r.table
    fig, ax = _figure()
    train_all, train_under = r.stats["train_share_all"], r.stats["train_share_underspecified"]
    ax.axhline(train_all * 100, color="C0", linestyle="--", label=f"training, all captions ({train_all:.0%})")
    ax.axhline(train_under * 100, color="C2", linestyle="--", label=f"training, under-specified captions ({train_under:.0%})")
    err = _error(t, "generated_share")
    ax.errorbar(t["guidance"], t["generated_share"] * 100, yerr=err, marker="o", color="C3", capsize=3, label="generated (95% CI)")
    _label(ax, "classifier-free guidance scale", f"share {r.stats['value']} (%)",
           f"'{r.stats['prompt']}': {r.stats['attribute']} = {r.stats['value']}")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    return {"amplification": fig}


BUILDERS: dict[str, Callable] = {
    "domains": _domains, "sizes": _sizes, "scores": _scores, "funnel": _funnel,
    "languages": _languages, "captions": _captions, "amplification": _amplification,
}


def figures_for(result) -> dict[str, Any]:
    """``{name: Figure}`` for an :class:`~sdlab.audit.results.AuditResult` (empty for the summary)."""
    builder = BUILDERS.get(result.analysis)
    return builder(result) if builder and len(result.table) else {}
