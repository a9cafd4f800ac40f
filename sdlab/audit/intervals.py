"""Confidence intervals for shares: Wilson for one share, a bootstrap for the difference of two.

Audit figures are shares of a sample (captions detected as English, yellow
triangles among generations); each is reported with the interval it deserves,
and these are the two every analysis uses.
"""
from __future__ import annotations

import numpy as np


def wilson(k: np.ndarray, n: int, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for k successes out of n (vectorised); good at shares near 0 and 1."""
    k = np.asarray(k, dtype=float)
    if n <= 0:
        return np.full_like(k, np.nan), np.full_like(k, np.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # the interval always holds p, even where rounding alone would put it a hair outside
    return np.clip(np.minimum(centre - half, p), 0, 1), np.clip(np.maximum(centre + half, p), 0, 1)


def difference_ci(k1: int, n1: int, k0: int, n0: int, rng: np.random.Generator, n_boot: int,
                  alpha: float) -> tuple[float, float]:
    """Percentile bootstrap CI of k1/n1 - k0/n0 for two independent samples (NaN when either is empty)."""
    if n1 == 0 or n0 == 0:
        return np.nan, np.nan
    d = rng.binomial(n1, k1 / n1, n_boot) / n1 - rng.binomial(n0, k0 / n0, n_boot) / n0
    return float(np.quantile(d, alpha)), float(np.quantile(d, 1 - alpha))
