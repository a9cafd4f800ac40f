"""Images in, images out: one normalisation used by every module.

Everything inside sdlab works on RGB ``uint8`` arrays of shape (H, W, 3).
:func:`to_rgb` accepts what users hand us (paths, PIL images, arrays; alpha,
grayscale, 16-bit, palette) and says what it converted, so results can carry
an honest note.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from .errors import SdlabError, ValidationError

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]
WRITABLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")  # the formats Pillow writes here by name


def open_image(path: str | os.PathLike, name: str = "image", error: type[SdlabError] = ValidationError) -> Image.Image:
    """A loaded PIL image from a file, or one ``error`` line naming the parameter: no such file, or not an image."""
    path = Path(path)
    if not path.exists():
        raise error(f"{name}: no such file {str(path)!r}")
    try:
        image = Image.open(path)
        image.load()
    except Exception as exc:  # Pillow raises many types on a file that is not an image
        raise error(f"{name}: {str(path)!r} is not a readable image ({exc})") from None
    return image


def to_rgb(image: ImageLike) -> tuple[np.ndarray, list[str]]:
    """Return (RGB uint8 HxWx3 array, notes on what was converted)."""
    notes: list[str] = []
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image)
    if isinstance(image, Image.Image):
        if image.mode == "P":
            notes.append("palette image converted to RGB")
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            notes.append("16-bit image reduced to 8 bits")
            arr = np.asarray(image, dtype=np.float64)
            image = Image.fromarray(np.clip(arr / 257.0, 0, 255).astype(np.uint8))
        if image.mode in ("RGBA", "LA", "PA"):
            notes.append("alpha channel composited onto white")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image.convert("RGBA"))
        if image.mode in ("L", "1"):
            notes.append("grayscale image converted to RGB")
        array = np.asarray(image.convert("RGB"))
        return np.ascontiguousarray(array), notes
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype == np.uint16:
            notes.append("16-bit image reduced to 8 bits")
            array = (array / 257.0).round().astype(np.uint8)
        elif array.dtype in (np.float32, np.float64):
            if array.min() < 0 or array.max() > 1:
                raise ValidationError("image: float arrays must hold values in [0, 1]")
            array = (array * 255.0).round().astype(np.uint8)
        elif array.dtype != np.uint8:
            raise ValidationError(f"image: unsupported array dtype {array.dtype}; use uint8, uint16 or float in [0, 1]")
        if array.ndim == 2:
            notes.append("grayscale image converted to RGB")
            array = np.repeat(array[..., None], 3, axis=2)
        elif array.ndim == 3 and array.shape[2] == 4:
            notes.append("alpha channel composited onto white")
            alpha = array[..., 3:4].astype(np.float32) / 255.0
            array = (array[..., :3] * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
        elif not (array.ndim == 3 and array.shape[2] == 3):
            raise ValidationError(f"image: array shape {array.shape} is not HxW, HxWx3 or HxWx4")
        return np.ascontiguousarray(array), notes
    raise ValidationError(f"image: expected a path, PIL image or numpy array, got {type(image).__name__}")


def load_rgb(image: ImageLike) -> np.ndarray:
    """:func:`to_rgb` without the notes."""
    return to_rgb(image)[0]


# scikit-image ships these photos inside its wheel: available offline.
# Eight distinct photos scikit-image bundles (offline). Its ``cat`` is ``chelsea`` again, so not listed.
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "camera", "immunohistochemistry", "hubble_deep_field")


def load_sample(name: str) -> np.ndarray:
    """One of scikit-image's bundled images by name, as RGB uint8 at its shipped size."""
    from skimage import data

    if name == "motorcycle":  # the left view of the stereo pair (the right one is nearly the same photo)
        return load_rgb(data.stereo_motorcycle()[0])
    loader = getattr(data, name, None)
    if not callable(loader):
        raise ValidationError(f"photo: scikit-image has no image {name!r}; e.g. {', '.join(SAMPLE_PHOTOS)}")
    image = loader()
    if image.ndim == 3 and image.shape[2] == 4:  # the logo: composite its alpha over white
        alpha = image[..., 3:4].astype(np.float32) / 255
        image = (image[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return load_rgb(image)


def sample_photos(size: int | None = 512, names: tuple[str, ...] = SAMPLE_PHOTOS) -> dict[str, np.ndarray]:
    """scikit-image's bundled photos as RGB uint8, centre-cropped square and resized to ``size`` (None: as shipped)."""
    photos = {}
    for name in names:
        array = load_sample(name)
        if size is not None:
            h, w = array.shape[:2]
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            square = Image.fromarray(np.ascontiguousarray(array[top : top + side, left : left + side]))
            array = np.asarray(square.resize((size, size), Image.LANCZOS))
        photos[name] = array
    return photos


def to_tensor(images: np.ndarray):
    """RGB uint8 (N, H, W, 3) or one (H, W, 3) image -> float (N, 3, H, W) in [-1, 1], as SD's VAE expects."""
    import torch

    images = np.ascontiguousarray(images)
    if not images.flags.writeable:  # np.asarray(PIL image) is read-only; torch warns on sharing it
        images = images.copy()
    return torch.from_numpy(images if images.ndim == 4 else images[None]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def from_tensor(x) -> np.ndarray:
    """Float (N, 3, H, W) in [-1, 1] -> RGB uint8 (N, H, W, 3): the inverse of :func:`to_tensor`, clipped."""
    return ((x.detach().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def latent_cells(masks, latent_hw: tuple[int, int]):
    """(N, 1, h, w) float32 torch tensor: 1 at the latent cells each (N, H, W) mask touches and at their neighbours
    (max-pooled to the latent grid, then widened by one cell), else 0; the cells a shape-weighted loss weighs up."""
    import torch
    import torch.nn.functional as F

    cells = F.adaptive_max_pool2d(torch.from_numpy(np.asarray(masks, np.float32))[:, None], latent_hw)
    return F.max_pool2d(cells, 3, stride=1, padding=1)

