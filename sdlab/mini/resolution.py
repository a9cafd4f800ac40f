"""Shapes-world measures for images made away from the world's native 64 x 64 (handed to
:func:`sdlab.resolution.measure_sizes` by the notebook, the CLI and the benchmark).

- :func:`count_shapes`: connected regions that differ from the background. Every scene has one
  shape, so a count above 1 is the duplicated-subject failure of SD away from its native size.
- :func:`size_metric`: that count beside the attribute checker's reading of the image brought back
  to 64 x 64 (the checker's grid and templates are in the world's pixels).
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from ..validation import invalid
from . import checker, world
from .metrics import checker_metric


def count_shapes(image: np.ndarray) -> int:
    """Connected regions further than the checker's threshold from the border's median colour,
    ignoring those smaller than the checker's smallest shape (scaled with the image's area)."""
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise invalid("image", f"an array of shape {pixels.shape}", "an H x W x 3 RGB image")
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    foreground = np.linalg.norm(pixels - np.median(border, axis=0), axis=2) > checker.FOREGROUND_DISTANCE
    labels, n = ndimage.label(foreground)
    if n == 0:
        return 0
    areas = ndimage.sum_labels(foreground, labels, index=range(1, n + 1))
    smallest = checker.MIN_AREA * pixels.shape[0] * pixels.shape[1] / world.IMAGE_SIZE**2
    return int((areas >= smallest).sum())


def size_metric(image: np.ndarray, spec) -> dict:
    """``shapes`` (:func:`count_shapes` at the image's own size), ``duplicated`` (more than one), and
    the checker's ``*_ok`` / ``all_ok`` for ``spec.prompt`` on the image resized to 64 x 64 (Lanczos;
    a non-square image is squeezed to the square the world's grid is defined on)."""
    image = np.asarray(image)
    native = world.IMAGE_SIZE
    small = image if image.shape[:2] == (native, native) else np.asarray(Image.fromarray(image).resize((native, native), Image.LANCZOS))
    shapes = count_shapes(image)
    return {"shapes": shapes, "duplicated": shapes > 1, **checker_metric(small, spec)}
