"""A palette of latent vectors with Floyd–Steinberg dithering: Bühlmann's way to spend fewer bits per latent.

Each latent position is a vector of C 8-bit codes; a palette of at most 256
such vectors, found by k-means, lets a position be stored as one index byte.
Error diffusion spreads each position's quantisation error over its
neighbours, so the grid's local average stays close to the original and
the decoder sees less banding than nearest-entry mapping gives.
"""
from __future__ import annotations

import numpy as np


def kmeans_palette(vectors: np.ndarray, k: int, iters: int = 15, seed: int = 0) -> np.ndarray:
    """At most ``k`` centres (uint8) for the rows of ``vectors`` (uint8 N x C): k-means++ then Lloyd."""
    unique = np.unique(vectors, axis=0)
    if len(unique) <= k:
        return unique
    x = vectors.astype(np.float32)
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        i = int(rng.choice(len(x), p=d2 / total)) if total > 0 else int(rng.integers(len(x)))
        centres.append(x[i])
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(1))
    c = np.stack(centres)
    for _ in range(iters):
        assign = _nearest(x, c)
        sums = np.zeros_like(c)
        np.add.at(sums, assign, x)
        counts = np.bincount(assign, minlength=len(c))[:, None]
        c = np.where(counts > 0, sums / np.maximum(counts, 1), c)
    c = np.unique(np.clip(np.rint(c), 0, 255).astype(np.uint8), axis=0)
    return c


def _nearest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T.astype(np.float32) + (centres.astype(np.float32) ** 2).sum(1)[None]
    return d.argmin(1)


def dither_to_palette(grid: np.ndarray, palette: np.ndarray, dither: bool = True) -> np.ndarray:
    """Indices (h x w uint8) of ``palette`` entries for a C x h x w uint8 grid, Floyd–Steinberg error diffusion."""
    c, h, w = grid.shape
    x = grid.reshape(c, -1).T.astype(np.float32)
    pal = palette.astype(np.float32)
    if not dither:
        return _nearest(x, pal).reshape(h, w).astype(np.uint8)
    work = grid.transpose(1, 2, 0).astype(np.float32)
    out = np.empty((h, w), np.uint8)
    pal_sq = (pal * pal).sum(1)
    for y in range(h):
        for xx in range(w):
            v = np.clip(work[y, xx], 0, 255)
            i = int((pal_sq - 2.0 * pal @ v).argmin())
            out[y, xx] = i
            err = v - pal[i]
            if xx + 1 < w:
                work[y, xx + 1] += err * (7 / 16)
            if y + 1 < h:
                if xx > 0:
                    work[y + 1, xx - 1] += err * (3 / 16)
                work[y + 1, xx] += err * (5 / 16)
                if xx + 1 < w:
                    work[y + 1, xx + 1] += err * (1 / 16)
    return out
