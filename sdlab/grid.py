"""Labelled image grids, like AUTOMATIC1111's X/Y plot: values along the top and the left, axis titles."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import ValidationError


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def labelled_grid(
    rows: Sequence[Sequence[Image.Image | np.ndarray]],
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    x_title: str = "",
    y_title: str = "",
    cell: int | None = None,
    title: str = "",
) -> Image.Image:
    """Paste ``rows[y][x]`` into one image with column labels on top and row labels on the left.

    ``cell`` resizes every image to a square of that many pixels (nearest
    neighbour, so small shapes-world images stay crisp).
    """
    images = [[im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in row] for row in rows]
    if not images or not images[0]:
        raise ValidationError("images: an empty list is not valid; valid: at least one row of images")
    w, h = (cell, cell) if cell else images[0][0].size
    font_size = max(12, min(w, h) // 8)
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = max(int(probe.textlength(str(s), font=font)) for s in y_labels) + font_size + (font_size + 8 if y_title else 0)
    top = font_size * 2 + 8 + (font_size + 8 if x_title else 0) + (font_size + 8 if title else 0)
    canvas = Image.new("RGB", (left + w * len(x_labels), top + h * len(y_labels)), "white")
    draw = ImageDraw.Draw(canvas)
    y0 = 4
    if title:
        draw.text((4, y0), title, fill="black", font=font)
        y0 += font_size + 8
    if x_title:
        draw.text((left, y0), x_title, fill="black", font=font)
        y0 += font_size + 8
    for i, label in enumerate(x_labels):
        draw.text((left + i * w + w // 2, y0 + font_size // 2), str(label), fill="black", font=font, anchor="mt")
    if y_title:
        draw.text((4, top - font_size - 4), y_title, fill="black", font=font)
    for j, label in enumerate(y_labels):
        draw.text((left - font_size // 2, top + j * h + h // 2), str(label), fill="black", font=font, anchor="rm")
        for i, image in enumerate(images[j]):
            canvas.paste(image.convert("RGB").resize((w, h), Image.NEAREST), (left + i * w, top + j * h))
    return canvas
