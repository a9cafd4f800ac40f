"""The standard RD benchmark: default image sets, default budgets, and its files on disk.

Shared by ``sdlab compress bench``, ``benchmarks/bench_compression.py`` and
the notebook, so all three measure the same thing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..images import load_rgb, sample_photos
from ..io import atomic_path
from .rd import DEFAULT_CODECS, rd_curves, summarise

PHOTO_BUDGETS = (2000, 3500, 5000, 8000, 12000, 20000)  # bytes for 512x512 photos (0.06-0.6 bpp)
SHAPES_BUDGETS = (80, 120, 160, 240, 320, 480)  # bytes for 64x64 shapes-world images (0.16-0.94 bpp)
SHAPES_SEED = 1  # the trained model saw seed 0's images; seed 1 gives unseen scenes


def photo_set(size: int = 512) -> dict[str, np.ndarray]:
    """scikit-image's bundled photos (offline), square, ``size`` px."""
    return sample_photos(size)


def shapes_set(n: int = 16, seed: int = SHAPES_SEED) -> dict[str, np.ndarray]:
    """``n`` shapes-world images (64x64) from a seed the model was not trained on."""
    from ..mini.world import make_dataset

    images = make_dataset(n, seed)[0]
    return {f"shapes{i:02d}": im for i, im in enumerate(images)}


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
              codecs: Sequence[str] = DEFAULT_CODECS, vae: Any = None,
              callback: Callable[[int, int], None] | None = None, progress: bool = False):
    """Run :func:`rd_curves`; with ``out_dir`` write ``rd.csv``, ``summary.csv`` and ``rd.png``."""
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
        summarise(frame).to_csv(tmp, index=False)
    fig = plot_rd(frame)
    with atomic_path(paths["plot"]) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return paths
