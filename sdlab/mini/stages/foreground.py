"""Where the shape is: pixel and latent-cell masks, and the shape-weighted reconstruction loss.

A small shape is ~2% of a 64x64 image and covers 3-4 of the 256 latent cells,
so under a plain mean the error on it is a rounding error of the background's.
The losses that need the shape to count weigh these masks up.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...images import to_tensor


def foreground(x: torch.Tensor, threshold: float = 0.15) -> torch.Tensor:
    """1 where a pixel differs from its image's border colour (the shape), else 0."""
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)
    background = border.median(dim=2).values[:, :, None, None]
    return ((x - background).abs().amax(dim=1, keepdim=True) > threshold).float()


def latent_foreground(images: np.ndarray, latent_size: int, dilation: int = 1, batch: int = 1024) -> torch.Tensor:
    """(n, 1, h, w) 1 at latent cells that hold part of the shape or lie ``dilation`` cells from it.

    Under plain MSE the UNet draws small squares and crosses as blobs the
    checker reads as circles; weighting these cells makes the shape count.
    """
    factor = images.shape[1] // latent_size
    chunks = []
    for i in range(0, len(images), batch):
        cells = F.max_pool2d(foreground(to_tensor(images[i : i + batch])), factor)
        chunks.append(F.max_pool2d(cells, 2 * dilation + 1, stride=1, padding=dilation).to(torch.uint8))
    return torch.cat(chunks)


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, foreground_weight: float) -> torch.Tensor:
    """L2 + L1 error with shape pixels weighted ``1 + foreground_weight``: a small shape is ~2% of the image."""
    error = recon - x
    weight = 1.0 + foreground_weight * foreground(x)
    return (weight * (error.pow(2) + error.abs())).mean() / weight.mean()
