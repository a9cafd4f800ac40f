"""Attribute checker: what a shapes-world image shows, by deterministic image analysis.

Background from the border pixels, the shape as the largest connected region
that differs from it, colour from the region's core pixels, position from its
centroid on the 3x3 grid, and shape and size by matching the region's soft coverage
against the renderer's own anti-aliased outlines (:func:`world.shape_outline`) over the allowed
rotations. It is what the sweep, guidance and bias lessons measure, so it is
tested on the generator's ground truth (>= 99% per attribute).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np
import pandas as pd
from scipy import ndimage

from ..errors import ValidationError
from . import world

ATTRIBUTES = ("shape", "colour", "size", "position", "background")
FOREGROUND_DISTANCE = 60.0  # RGB distance from the background that counts as "shape"
MIN_AREA = 12  # pixels; smaller regions are noise, not a shape
_SIZE_SPLIT = (world.RADIUS["small"][1] + world.RADIUS["large"][0]) / 2  # radius between the classes
_GRID_SPLITS = ((world.GRID_CENTRES[0] + world.GRID_CENTRES[1]) / 2, (world.GRID_CENTRES[1] + world.GRID_CENTRES[2]) / 2)
_ROTATIONS = np.linspace(-world.MAX_ROTATION, world.MAX_ROTATION, 7)


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    distances = np.linalg.norm(np.asarray([palette[n] for n in names], dtype=np.float32) - rgb, axis=1)
    return names[int(np.argmin(distances))]


def _area_factor(shape: str) -> float:
    """Area of the shape with radius 1 (so radius = sqrt(area / factor))."""
    outline = np.asarray(world.shape_outline(shape, 0.0, 0.0, 1.0, 0.0))
    x, y = outline[:, 0], outline[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


_AREA = {s: _area_factor(s) for s in world.SHAPES}


def _grid_index(value: float) -> int:
    return 0 if value < _GRID_SPLITS[0] else (2 if value >= _GRID_SPLITS[1] else 1)


def check(image: np.ndarray) -> dict[str, str | None]:
    """Attributes of one RGB uint8 image (H x W x 3); ``None`` where no shape is found."""
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValidationError(f"image: an array of shape {pixels.shape} is not valid; valid: an H x W x 3 RGB image")
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background_rgb = np.median(border, axis=0)
    result: dict[str, str | None] = {a: None for a in ATTRIBUTES}
    result["background"] = _nearest(background_rgb, world.BACKGROUNDS)

    foreground = np.linalg.norm(pixels - background_rgb, axis=2) > FOREGROUND_DISTANCE
    labels, n = ndimage.label(foreground)
    if n == 0:
        return result
    areas = ndimage.sum_labels(foreground, labels, index=range(1, n + 1))
    region = labels == (1 + int(np.argmax(areas)))
    area = float(region.sum())
    if area < MIN_AREA:
        return result

    core = ndimage.binary_erosion(region) if area > 40 else region
    shape_rgb = np.median(pixels[core if core.any() else region], axis=0)
    result["colour"] = _nearest(shape_rgb, world.COLOURS)

    # Soft coverage of each pixel: where it lies between background and shape colour.
    # Comparing it with the renderer's anti-aliased templates separates small shapes.
    direction = shape_rgb - background_rgb
    alpha = np.clip((pixels - background_rgb) @ direction / max(float(direction @ direction), 1e-6), 0.0, 1.0)
    alpha *= ndimage.binary_dilation(region, iterations=2)
    coverage = float(alpha.sum())
    cy, cx = (c + 0.5 for c in ndimage.center_of_mass(alpha))  # pixel i spans [i, i+1)
    result["position"] = next(name for name, cell in world.POSITIONS.items() if cell == (_grid_index(cx), _grid_index(cy)))

    best = (math.inf, None, 0.0)
    size = image.shape[0]
    for shape in world.SHAPES:
        radius = math.sqrt(coverage / _AREA[shape])
        for rotation in (_ROTATIONS if shape != "circle" else (0.0,)):
            error = float(np.square(world.render_mask(shape, cx, cy, radius, rotation, size) - alpha).sum())
            if error < best[0]:
                best = (error, shape, radius)
    result["shape"] = best[1]
    result["size"] = "small" if best[2] < _SIZE_SPLIT else "large"
    return result


def score(images: Iterable[np.ndarray], expected: pd.DataFrame, read: Callable[[np.ndarray], dict] | None = None,
          attributes: tuple[str, ...] = ATTRIBUTES, more: Callable[[dict, pd.Series], dict] | None = None) -> pd.DataFrame:
    """One row per image: the checker's reading, and per attribute whether it matches ``expected``.

    ``expected`` has one row per image and a column per attribute; a missing or
    NaN attribute (left out of the prompt) is not scored. ``read`` (default :func:`check`)
    reads ``attributes``; ``more(found, want)`` adds columns (the fine-tuning concepts' verdict).
    """
    rows = []
    for image, (_, want) in zip(images, expected.iterrows()):
        found = (read or check)(np.asarray(image))
        row = {f"found_{a}": found[a] for a in attributes}
        scored = []
        for a in attributes:
            if a in want and isinstance(want[a], str):
                row[f"{a}_ok"] = found[a] == want[a]
                scored.append(row[f"{a}_ok"])
        row["all_ok"] = bool(all(scored)) if scored else None
        rows.append({**row, **(more(found, want) if more else {})})
    return pd.DataFrame(rows, index=expected.index)
