"""Figures for the compression lab: RD curves, crops at equal bytes, and where learned codecs fail.

Every function returns a matplotlib Figure (nothing is shown or saved here)
built from the tidy tables of :mod:`.rd` and :mod:`.content`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import DataError
from ..validation import Options, invalid, validate_params
from .rd import METRICS

UNITS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "ms_ssim": "MS-SSIM", "bpp": "rate (bits per pixel)",
         "bytes": "size (bytes)"}


def complete_means(frame, metric: str):
    """Mean ``metric`` and rate per codec x budget, kept only where every image fit the budget.

    Averaging over whichever images happened to fit would mix easy and hard
    images differently at each budget; dropping incomplete budgets keeps each
    point an average over the same images.
    """
    n_images = frame["image"].nunique()
    ok = frame[(frame["status"] == "ok") & frame[metric].notna()]
    means = ok.groupby(["codec", "budget"], as_index=False).agg(
        bpp=("bpp", "mean"), bytes=("bytes", "mean"), value=(metric, "mean"), n=(metric, "size"))
    return means[means["n"] == n_images].rename(columns={"value": metric})


def plot_rd(frame, metrics: Sequence[str] = ("psnr", "ssim", "ms_ssim"), x: str = "bpp", title: str | None = None):
    """One panel per metric: mean quality against mean rate, one line per codec."""
    import matplotlib.pyplot as plt

    validate_params({"x": x}, {"x": [Options(("bpp", "bytes"))]})
    asked, metrics = metrics, [m for m in metrics if m in frame and frame[m].notna().any()]
    if not metrics:
        with_values = [m for m in METRICS if m in frame and frame[m].notna().any()]
        raise invalid("metrics", asked, "columns with values in this table: " + (", ".join(with_values) or "none"))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        means = complete_means(frame, metric)
        for codec, part in means.groupby("codec", sort=False):
            part = part.sort_values(x)
            ax.plot(part[x], part[metric], marker="o", label=codec)
        ax.set_xlabel(UNITS[x])
        ax.set_ylabel(UNITS.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0][0].legend(title="codec")
    fig.suptitle(title or f"Rate–distortion, mean over {frame['image'].nunique()} images "
                 "(budgets where every image fits)")
    fig.tight_layout()
    return fig


def _needs_decoded(frame, maker: str) -> None:
    if "decoded" not in frame:
        raise DataError(f"frame: has no decoded column; valid: a table from {maker}(..., keep_images=True)")


def _label(row) -> str:
    if row["status"] != "ok":
        return f"{row['codec']}\n{row['status'][:28]}"
    return f"{row['codec']} q{int(row['quality'])}\n{int(row['bytes'])} B, {row['psnr']:.1f} dB"


def crop_viewer(original: np.ndarray, frame, box: tuple[int, int, int, int] | None = None, zoom_side: int = 96):
    """Full images and a zoomed crop for each codec, from an ``rd_curves(..., keep_images=True)`` table.

    ``frame`` holds one image at one budget (filter it first). ``box`` is
    (top, left, bottom, right); default: a ``zoom_side`` square at the centre.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    _needs_decoded(frame, "rd_curves")
    if frame["image"].nunique() != 1 or frame["budget"].nunique() != 1:
        raise DataError(f"frame: {frame['image'].nunique()} images x {frame['budget'].nunique()} budgets; "
                        "valid: one image at one budget (filter it first)")
    h, w = original.shape[:2]
    if box is None:
        s = min(zoom_side, h, w)
        box = ((h - s) // 2, (w - s) // 2, (h - s) // 2 + s, (w - s) // 2 + s)
    top, left, bottom, right = box
    rows = list(frame.itertuples(index=False))
    n = len(rows) + 1
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.6), squeeze=False)
    panels = [("original", original)] + [(_label(r._asdict()), r.decoded) for r in rows]
    for col, (label, image) in enumerate(panels):
        for row in (0, 1):
            ax = axes[row][col]
            ax.axis("off")
            if image is None:
                ax.text(0.5, 0.5, label, ha="center", va="center", fontsize=8, transform=ax.transAxes)
                continue
            if row == 0:
                ax.imshow(image)
                ax.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, color="yellow", lw=1))
                ax.set_title(label, fontsize=8)
            else:
                ax.imshow(image[top:bottom, left:right], interpolation="nearest")
    budget = int(frame["budget"].iloc[0])
    fig.suptitle(f"{frame['image'].iloc[0]} at ≤ {budget} bytes ({8 * budget / (h * w):.3f} bpp); "
                 f"bottom row: crop rows {top}-{bottom}, columns {left}-{right}, nearest-neighbour zoom")
    fig.tight_layout()
    return fig


def failure_panel(frame, cases: dict, bpp: float | None = None):
    """Rows: content cases (text, faces, texture); columns: original then each codec at one rate.

    ``frame`` is a :func:`~sdlab.compression.content.content_checks` table
    made with ``keep_images=True``; ``bpp`` picks its rate (default: the lowest).
    """
    import matplotlib.pyplot as plt

    _needs_decoded(frame, "content_checks")
    codecs = list(dict.fromkeys(frame["codec"]))
    fig, axes = plt.subplots(len(cases), len(codecs) + 1, figsize=(2.4 * (len(codecs) + 1), 2.5 * len(cases)),
                             squeeze=False)
    for r, (name, case) in enumerate(cases.items()):
        part = frame[frame["case"] == name]
        if bpp is None:
            budget = part["budget"].min()
        else:
            target = bpp * case.image.shape[0] * case.image.shape[1] / 8
            budget = part["budget"].iloc[int((part["budget"] - target).abs().to_numpy().argmin())]
        part = part[part["budget"] == budget]
        crop = _case_crop(case)
        axes[r][0].imshow(case.image[crop])
        axes[r][0].set_title(f"{name}: original\n{case.measure}", fontsize=8)
        for c, codec in enumerate(codecs, start=1):
            ax = axes[r][c]
            rows = part[part["codec"] == codec]
            row = rows.iloc[0] if len(rows) else None
            if row is None or row["decoded"] is None:
                status = "missing" if row is None else row["status"][:28]
                ax.text(0.5, 0.5, f"{codec}\n{status}", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            else:
                ax.imshow(row["decoded"][crop])
                ax.set_title(f"{codec} {int(row['bytes'])} B\n{case.measure} {row['value']:.2f}", fontsize=8)
        for ax in axes[r]:
            ax.axis("off")
    fig.suptitle("Where it fails: text (edge F1), small faces (PSNR deficit on faces, dB), texture (detail kept)")
    fig.tight_layout()
    return fig


def _case_crop(case) -> tuple[slice, slice]:
    h, w = case.image.shape[:2]
    if case.boxes:
        top, left, bottom, right = case.boxes[0]
        pad = max(bottom - top, right - left) // 2 + 8
        return slice(max(top - pad, 0), min(bottom + pad, h)), slice(max(left - pad, 0), min(right + pad, w))
    if case.measure == "edge_f1":
        return slice(0, h), slice(0, min(w, 2 * h))
    s = min(h, w, 96)
    return slice((h - s) // 2, (h - s) // 2 + s), slice((w - s) // 2, (w - s) // 2 + s)
