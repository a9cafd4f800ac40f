"""Image quality metrics shared by every module: PSNR, SSIM, MS-SSIM, bits per pixel, saturation and clipping.

The comparisons take two RGB (or grayscale) ``uint8`` arrays of the same
shape, the reference first (:func:`saturation` and :func:`clipped_share` take
one image), and measure on the 0..255 scale, so numbers agree with
what papers and REFERENCE.md quote. PSNR and SSIM are scikit-image's; MS-SSIM
is pytorch-msssim's (Wang et al. 2003 weights), which needs images of at least
161 pixels on the short side: below that :func:`ms_ssim` returns NaN rather
than a number computed on too few scales.
"""
from __future__ import annotations


import itertools
import math
from typing import Sequence

import numpy as np

from .errors import DependencyError, ValidationError

DATA_RANGE = 255.0
MS_SSIM_MIN_SIDE = 161  # 5 scales of an 11-px window: (11 - 1) * 2**4 + 1


def _pair(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference, test = np.asarray(reference), np.asarray(test)
    if reference.shape != test.shape:
        raise ValidationError(f"test: shape {test.shape} differs from the reference's {reference.shape}")
    if reference.ndim not in (2, 3) or reference.size == 0:
        raise ValidationError(f"reference: expected an HxW or HxWxC image, got shape {reference.shape}")
    return reference, test


def mse(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean squared error on the 0..255 scale."""
    reference, test = _pair(reference, test)
    diff = reference.astype(np.float64) - test.astype(np.float64)
    return float(np.mean(diff * diff))


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(range^2 / MSE)``; ``inf`` for identical images."""
    err = mse(reference, test)
    if err == 0:
        return math.inf
    return float(10.0 * math.log10(data_range * data_range / err))


def ssim(reference: np.ndarray, test: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """Structural similarity (scikit-image defaults: 7x7 uniform window), averaged over channels."""
    from skimage.metrics import structural_similarity

    reference, test = _pair(reference, test)
    if min(reference.shape[:2]) < 7:
        raise ValidationError(f"reference: SSIM needs images of at least 7x7 pixels, got {reference.shape[:2]}")
    channel_axis = -1 if reference.ndim == 3 else None
    return float(structural_similarity(reference, test, data_range=data_range, channel_axis=channel_axis))


def mean_pairwise_ssim(images: Sequence[np.ndarray]) -> float:
    """Mean SSIM over every pair of ``images`` (NaN for fewer than two): 1 minus it measures diversity across seeds."""
    pairs = [ssim(a, b) for a, b in itertools.combinations(images, 2)]
    return float(np.mean(pairs)) if pairs else float("nan")


def ms_ssim(reference: np.ndarray, test: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """Multi-scale SSIM (pytorch-msssim); NaN when the short side is under 161 pixels."""
    reference, test = _pair(reference, test)
    if min(reference.shape[:2]) < MS_SSIM_MIN_SIDE:
        return math.nan
    try:
        import torch
        from pytorch_msssim import ms_ssim as _ms_ssim
    except ImportError:
        raise DependencyError("ms_ssim needs pytorch-msssim: pip install pytorch-msssim") from None

    def tensor(a: np.ndarray) -> "torch.Tensor":
        a = a[..., None] if a.ndim == 2 else a
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None]

    with torch.no_grad():
        return float(_ms_ssim(tensor(reference), tensor(test), data_range=data_range, size_average=True))


def saturation(image: np.ndarray) -> float:
    """Mean HSV saturation in [0, 1] of one RGB ``uint8`` image."""
    rgb = np.asarray(image, np.float32) / 255.0
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    return float(np.mean(np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)))


def clipped_share(image: np.ndarray) -> float:
    """Share of pixels of one RGB ``uint8`` image with a channel at 0 or 255: what very high guidance pushes out of range."""
    rgb = np.asarray(image)
    return float(np.mean(((rgb == 0) | (rgb == 255)).any(axis=2)))


def bits_per_pixel(n_bytes: int, shape: tuple[int, ...]) -> float:
    """Bits per pixel of an ``n_bytes`` file for an image of ``shape`` (H, W[, C])."""
    if len(shape) < 2 or shape[0] * shape[1] == 0:
        raise ValidationError(f"shape: expected (H, W[, C]) with H, W > 0, got {tuple(shape)}")
    return 8.0 * n_bytes / (shape[0] * shape[1])


def all_metrics(reference: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """PSNR, SSIM and MS-SSIM of ``test`` against ``reference`` in one dict."""
    return {"psnr": psnr(reference, test), "ssim": ssim(reference, test), "ms_ssim": ms_ssim(reference, test)}
