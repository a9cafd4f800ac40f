"""The standard RD benchmark: default budgets, the photo set, user images, and its files on disk.

Shared by ``sdlab compress bench``, ``benchmarks/bench_compression.py`` and
the notebook, so all three measure the same thing. The images are always
handed in: callers that benchmark the shapes world pass its images (and
:data:`SHAPES_BUDGETS`, sized for its 64x64 scenes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..images import load_rgb, sample_photos
from ..io import atomic_path
from ..progress import Callback
from .rd import DEFAULT_CODECS, rd_curves, summarize

PHOTO_BUDGETS = (2000, 3500, 5000, 8000, 12000, 20000)  # bytes for 512x512 photos (0.06-0.6 bpp)
SHAPES_BUDGETS = (80, 120, 160, 240, 320, 480)  # bytes for 64x64 shapes-world images (0.16-0.94 bpp)


def photo_set(size: int = 512) -> dict[str, np.ndarray]:
    """scikit-image's bundled photos (offline), square, ``size`` px."""
    return sample_photos(size)


def load_images(paths: Sequence[str]) -> dict[str, np.ndarray]:
    """User images by path, keyed by file stem (made unique)."""
    out: dict[str, np.ndarray] = {}
    for p in paths:
        name = Path(p).stem
        while name in out:
            name += "_"
        out[name] = load_rgb(p)
    return out


def run_bench(images: dict[str, np.ndarray], budgets: Sequence[int], out_dir: str | Path | None = None,
              codecs: Sequence[str] = DEFAULT_CODECS, vae: Any = None, callback: Callback | None = None,
              progress: bool = False):
    """Run :func:`rd_curves` on ``images``; with ``out_dir`` write ``rd.csv``, ``summary.csv`` and ``rd.png``."""
    frame = rd_curves(images, list(codecs), list(budgets), vae=vae, callback=callback, progress=progress)
    if out_dir is not None:
        write_outputs(frame, out_dir)
    return frame


def write_outputs(frame, out_dir: str | Path) -> dict[str, Path]:
    """Write the table, its summary and the RD plot into ``out_dir`` (atomically)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .plots import plot_rd

    out = Path(out_dir)
    paths = {"rd": out / "rd.csv", "summary": out / "summary.csv", "plot": out / "rd.png"}
    with atomic_path(paths["rd"]) as tmp:
        frame.drop(columns=["decoded"], errors="ignore").to_csv(tmp, index=False)
    with atomic_path(paths["summary"]) as tmp:
        summarize(frame).to_csv(tmp, index=False)
    fig = plot_rd(frame)
    with atomic_path(paths["plot"]) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return paths
