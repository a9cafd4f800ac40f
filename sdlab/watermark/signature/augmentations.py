"""Training-time stand-ins for the battery's attacks, in torch on images in [-1, 1], so the mark learns to survive them."""
from __future__ import annotations

import math

import numpy as np

from ...images import from_tensor, to_tensor
from ...validation import Options, validate_params

AUGMENTATIONS = ("none", "jpeg", "resize", "blur", "noise", "photo", "crop", "rotate", "erase")


def _jpeg(x, quality: int):
    """The battery's JPEG attack in the forward pass, identity in the backward pass."""
    from ..attacks import jpeg

    coded = np.stack([jpeg(im, quality) for im in from_tensor(x)])
    return x + (to_tensor(coded) - x).detach()


def _blur(x, sigma: float):
    import torch
    import torch.nn.functional as F

    radius = max(1, math.ceil(2.5 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum())
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def augment(x, name: str, rng: np.random.Generator):
    """One augmentation of a batch, at a strength drawn from ``rng`` (ranges cover the battery's strengths)."""
    import torch
    import torch.nn.functional as F

    validate_params({"augmentation": name}, {"augmentation": [Options(AUGMENTATIONS)]})
    size = x.shape[-2:]
    if name == "none":
        return x
    if name == "jpeg":
        return _jpeg(x, int(rng.integers(40, 96)))
    if name == "resize":
        small = F.interpolate(x, scale_factor=float(rng.uniform(0.3, 0.9)), mode="bilinear", antialias=True)
        return F.interpolate(small, size=size, mode="bicubic")
    if name == "blur":
        return _blur(x, float(rng.uniform(0.4, 2.0)))
    if name == "noise":
        g = torch.Generator().manual_seed(int(rng.integers(2**31)))
        return x + torch.randn(x.shape, generator=g) * float(rng.uniform(0.0, 0.08))
    if name == "photo":  # brightness then contrast, as PIL's ImageEnhance (in [0, 1])
        y = (x + 1) / 2 * float(rng.uniform(0.7, 1.6))
        mean = y.mean(dim=(1, 2, 3), keepdim=True)
        y = ((y - mean) * float(rng.uniform(0.7, 1.6)) + mean).clamp(0, 1)
        return y * 2 - 1
    if name == "crop":  # centre crop, read at the extractor's size (detection resizes any image to it)
        keep = float(rng.uniform(0.5, 1.0))
        h, w = size
        ch, cw = max(1, round(h * keep)), max(1, round(w * keep))
        top, left = (h - ch) // 2, (w - cw) // 2
        return F.interpolate(x[..., top:top + ch, left:left + cw], size=size, mode="bicubic")
    if name == "rotate":
        angle = math.radians(float(rng.uniform(-12, 12)))
        theta = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0]], dtype=x.dtype)
        grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(x + 1, grid, align_corners=False) - 1  # outside the image: black, as PIL's rotate
    # erase
    h, w = size
    frac = float(rng.uniform(0.02, 0.3))
    eh, ew = max(1, round(h * math.sqrt(frac))), max(1, round(w * math.sqrt(frac)))
    top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
    keep = torch.ones_like(x)
    keep[..., top:top + eh, left:left + ew] = 0
    return x * keep  # 0 in [-1, 1] is mid grey, as the battery's erase
