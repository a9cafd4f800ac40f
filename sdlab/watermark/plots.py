"""Battery plots with matplotlib: heat map, bit-accuracy curves, ROC curves (every axis labelled)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .roc import roc_curve

LEVELS = ("mild", "medium", "strong")


def _level_table(rows: pd.DataFrame, method: str, value: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values, strengths) with attacks as rows and strength rank (mild..strong) as columns."""
    g = rows[(rows["method"] == method) & (rows["attack"] != "none")]
    means = g.groupby(["attack", "strength"], sort=True)[value].mean().reset_index()
    from .attacks import ATTACKS

    def rank(r):
        default = ATTACKS[r.attack].strengths if r.attack in ATTACKS else ()
        order = list(default) if r.strength in default else sorted(means[means.attack == r.attack].strength)
        return order.index(r.strength)

    means["level"] = [rank(r) for r in means.itertuples()]
    return means.pivot(index="attack", columns="level", values=value), means.pivot(index="attack", columns="level", values="strength")


def heatmap(rows: pd.DataFrame, value: str = "bit_accuracy", methods: Sequence[str] | None = None, ax=None):
    """Attack x strength heat map of the mean ``value``, one panel per method; cells show value and strength."""
    import matplotlib.pyplot as plt

    methods = list(methods or rows["method"].unique())
    if ax is None:
        fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 0.4 * rows["attack"].nunique() + 1.5), squeeze=False)
        axes = axes[0]
    else:
        axes, fig = np.atleast_1d(ax), np.atleast_1d(ax)[0].figure
    for axis, method in zip(axes, methods):
        values, strengths = _level_table(rows, method, value)
        image = axis.imshow(values.to_numpy(dtype=float), vmin=0.4 if value == "bit_accuracy" else None,
                            vmax=1.0 if value == "bit_accuracy" else None, cmap="RdYlGn", aspect="auto")
        for (i, j), v in np.ndenumerate(values.to_numpy(dtype=float)):
            if not np.isnan(v):
                axis.text(j, i, f"{v:.2f}\n({strengths.iat[i, j]:g})", ha="center", va="center", fontsize=7)
        axis.set_xticks(range(values.shape[1]), [LEVELS[c] if c < len(LEVELS) else str(c) for c in values.columns])
        axis.set_yticks(range(values.shape[0]), values.index)
        axis.set_xlabel("attack strength (value in brackets)")
        axis.set_ylabel("attack")
        axis.set_title(f"{method}: mean {value.replace('_', ' ')}")
        fig.colorbar(image, ax=axis, label=value.replace("_", " "))
    fig.tight_layout()
    return fig


def accuracy_curves(rows: pd.DataFrame, attacks: Sequence[str] | None = None, ncols: int = 4):
    """Mean bit accuracy against strength, one panel per attack, one line per method (the unattacked baseline as a dotted line)."""
    import matplotlib.pyplot as plt

    attacks = [a for a in (attacks or rows["attack"].unique()) if a != "none"]
    nrows = int(np.ceil(len(attacks) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.7 * nrows), squeeze=False)
    for axis, attack in zip(axes.flat, attacks):
        for method, g in rows[rows["attack"] == attack].groupby("method"):
            curve = g.groupby("strength")["bit_accuracy"].mean()
            line = axis.plot(curve.index, curve.values, marker="o", label=method)[0]
            base = rows[(rows["attack"] == "none") & (rows["method"] == method)]["bit_accuracy"].mean()
            axis.axhline(base, color=line.get_color(), ls=":", lw=1)
        axis.axhline(0.5, color="grey", lw=0.8)
        axis.set_ylim(0.3, 1.02)
        axis.set_title(attack)
        axis.set_xlabel(f"strength ({_unit(attack)})")
        axis.set_ylabel("bit accuracy")
    for axis in list(axes.flat)[len(attacks):]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def roc_curves(rows: pd.DataFrame, attack: str = "none", strength: float | None = None, ax=None):
    """ROC of clean vs marked scores under one attack (and strength), one curve per method; log FPR axis."""
    import matplotlib.pyplot as plt

    g = rows[rows["attack"] == attack]
    if strength is not None:
        g = g[np.isclose(g["strength"], strength)]
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4))
    for method, m in g.groupby("method"):
        fpr, tpr, _ = roc_curve(m["clean_score"], m["score"])
        ax.step(np.maximum(fpr, 1e-3), tpr, where="post", label=method)
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 1.0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("false-positive rate (clean images called marked)")
    ax.set_ylabel("true-positive rate (marked images found)")
    ax.set_title(f"ROC under {attack}" + (f" {strength:g}" if strength is not None else ""))
    ax.legend(fontsize=8)
    return ax.figure


def _unit(attack: str) -> str:
    from .attacks import ATTACKS

    return ATTACKS[attack].unit if attack in ATTACKS else "strength"
