"""Views of a finished sweep: the labelled image grid, means with bootstrap intervals, diversity, metric plots."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def grid(table: pd.DataFrame, store_dir: str | Path, x: str, y: str | None = None, z_value: Any = None, z: str | None = None, cell: int = 96, prompt_index: int = 0):
    """A labelled X/Y image grid of a sweep (like A1111's X/Y/Z plot); one Z value at a time."""
    from PIL import Image

    from ..grid import labelled_grid

    missing = [c for c in (x, y, z, f"{x}_index", f"{y}_index" if y else None) if c is not None and c not in table]
    if missing:  # a store written before its axis's column existed (a prompt S/R axis's is ``sr`` now)
        from ..errors import ValidationError

        raise ValidationError(f"grid: the sweep's table has no column {missing[0]!r}; columns: {', '.join(map(str, table.columns))} "
                              "(rerun the sweep with --new / new=True to rebuild an older store)")
    rows = table[table["prompt_index"] == prompt_index]
    if z is not None:
        rows = rows[rows[z] == z_value]
    xs = sorted(rows[x].unique(), key=lambda v: rows.loc[rows[x] == v, f"{x}_index"].iloc[0])
    ys = sorted(rows[y].unique(), key=lambda v: rows.loc[rows[y] == v, f"{y}_index"].iloc[0]) if y else [None]
    images = []
    for yv in ys:
        line = []
        for xv in xs:
            match = rows[(rows[x] == xv) & ((rows[y] == yv) if y else True)]
            line.append(Image.open(Path(store_dir) / match["file"].iloc[0]).convert("RGB"))
        images.append(line)
    title = f"{z} = {z_value}" if z is not None else ""
    return labelled_grid(images, [f"{v:g}" if isinstance(v, float) else str(v) for v in xs],
                         [f"{v:g}" if isinstance(v, float) else ("" if v is None else str(v)) for v in ys],
                         x_title=x, y_title=y or "", cell=cell, title=title)


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n_boot, len(values)), replace=True).mean(axis=1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, 1 - (1 - level) / 2))


def summarize(table: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    """Mean of ``metric`` per group with a 95% bootstrap interval across the rest (usually seeds)."""
    import pandas as pd

    rows = []
    for key, group in table.groupby(by):
        lo, hi = bootstrap_ci(group[metric].astype(float).to_numpy())
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "metric": metric,
                     "mean": float(group[metric].astype(float).mean()), "ci_low": lo, "ci_high": hi, "n": len(group)})
    return pd.DataFrame(rows)


def diversity(table: pd.DataFrame, store_dir: str | Path, by: list[str]) -> pd.DataFrame:
    """1 - mean pairwise SSIM across the images of each group (usually: all seeds of one setting)."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from ..metrics import mean_pairwise_ssim

    rows = []
    for key, group in table.groupby(by):
        images = [np.asarray(Image.open(Path(store_dir) / f).convert("RGB")) for f in group["file"]]
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "diversity": 1 - mean_pairwise_ssim(images), "n": len(images)})
    return pd.DataFrame(rows)


def plot_metric(table: pd.DataFrame, metric: str, x: str, hue: str | None = None, ax=None):
    """``metric`` against axis ``x`` (one line per ``hue`` value) with 95% bootstrap bands across seeds."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(5, 3.5))[1]
    for label, group in (table.groupby(hue) if hue else [(None, table)]):
        s = summarize(group, metric, [x]).sort_values(x)
        ax.plot(s[x], s["mean"], marker="o", label=None if label is None else f"{hue}={label}")
        ax.fill_between(s[x], s["ci_low"], s["ci_high"], alpha=0.2)
    ax.set(xlabel=x, ylabel=f"{metric} (mean, 95% CI)")
    if hue:
        ax.legend(fontsize=8)
    return ax
