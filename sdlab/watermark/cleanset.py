"""Unmarked images for calibration and false-positive measurement, made offline and reproducibly.

Three kinds, so the null is not tuned to one look: crops and flips of
scikit-image's bundled photos at several sizes, shapes-world scenes rendered
at full size (flat colours, like generated clip art), and smooth random
textures. A ``seed`` picks a different but repeatable set, so calibration and
evaluation can use disjoint draws.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterator

import numpy as np
from PIL import Image

from ..images import SAMPLE_PHOTOS, sample_photos

EXTRA_PHOTOS = ("brick", "grass", "gravel", "coins", "moon", "page", "text", "retina", "colorwheel")
SIZES = (256, 384, 512, 640, 768)
KINDS = ("photo", "photo", "photo", "photo", "scene", "texture")  # 4 : 1 : 1


@lru_cache(maxsize=1)
def _photos() -> tuple[tuple[str, np.ndarray], ...]:
    """Every bundled scikit-image photo, as shipped (cached: decoding them takes a moment)."""
    return tuple(sample_photos(None, SAMPLE_PHOTOS + EXTRA_PHOTOS).items())


def photo_variant(rng: np.random.Generator, size: int | None = None) -> tuple[str, np.ndarray]:
    """A random crop (35–100 % of the short side), maybe flipped, resized to ``size`` (random if None)."""
    photos = _photos()
    name, photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.35, 1.0))
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = photo[top : top + side, left : left + side]
    flip = rng.integers(3)
    if flip == 1:
        crop = crop[:, ::-1]
    elif flip == 2:
        crop = crop[::-1]
    size = size or int(rng.choice(SIZES))
    out = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.LANCZOS))
    return f"{name}-crop{side}@{top},{left}-flip{flip}-{size}", out


def scene_image(rng: np.random.Generator, size: int | None = None) -> tuple[str, np.ndarray]:
    """A shapes-world scene rendered directly at ``size``."""
    from ..mini import world

    size = size or int(rng.choice(SIZES))
    scene = world.sample_scene(rng)
    big = np.asarray(world.render(scene, size=64).resize((size, size), Image.BICUBIC))
    return f"scene-{scene.shape}-{size}", big


def texture_image(rng: np.random.Generator, size: int | None = None) -> tuple[str, np.ndarray]:
    """Smooth colour noise (a low-pass random field) with a little grain."""
    from scipy.ndimage import gaussian_filter

    size = size or int(rng.choice(SIZES))
    sigma = rng.uniform(2, 24)
    field = gaussian_filter(rng.normal(size=(size, size, 3)), sigma=(sigma, sigma, 0))
    field = (field - field.mean()) / (field.std() + 1e-9)
    grain = rng.normal(scale=rng.uniform(0, 4), size=field.shape)
    pixels = 128 + 50 * field + grain
    return f"texture-s{sigma:.0f}-{size}", np.clip(pixels, 0, 255).round().astype(np.uint8)


def clean_images(n: int, seed: int = 0, size: int | None = None, kinds: tuple[str, ...] = KINDS) -> Iterator[tuple[str, np.ndarray]]:
    """``n`` unmarked (name, RGB) images; ``size=None`` mixes sizes from 256 to 768."""
    makers = {"photo": photo_variant, "scene": scene_image, "texture": texture_image}
    rng = np.random.default_rng([seed, 7919])
    for i in range(n):
        kind = kinds[i % len(kinds)]
        name, image = makers[kind](rng, size)
        yield f"{i:04d}-{name}", image
