"""Unmarked images for calibration, and held-out photos for measuring TPR and FPR, made offline and reproducibly.

scikit-image's bundled images are split by *source* into two disjoint groups,
so that the detection rates are measured on photos the null never saw:

- :data:`CALIBRATION_PHOTOS` (grayscale photos, the colour wheel, the logo)
  feed the null, together with flat-colour scenes (like generated clip art;
  drawn from a :class:`SceneSource` the caller passes in, e.g. the shapes
  world), smooth random colour textures, and *tinted* variants of the
  grayscale photos (their luminance mapped through a random two-colour ramp,
  so the null sees photo-like chroma texture without any held-out photo).
- :data:`EVALUATION_PHOTOS` (every natural colour photo scikit-image ships)
  are only ever used by :func:`evaluation_photos`: the 512² test set of the
  detection target (see there for its definition).

A ``seed`` picks a different but repeatable draw, so calibration and its own
FPR check can use disjoint draws too.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterator, Protocol

import numpy as np
from PIL import Image

from ..images import load_sample
from ..validation import invalid

CALIBRATION_PHOTOS = ("camera", "brick", "grass", "gravel", "coins", "moon", "page", "text", "clock", "cell",
                      "colorwheel", "logo")
EVALUATION_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble_deep_field",
                     "immunohistochemistry", "retina")
SIZES = (256, 384, 512, 640, 768)
KINDS = ("photo", "photo", "photo", "photo", "scene", "texture")  # 4 : 1 : 1
KINDS_WITHOUT_SCENES = ("photo", "photo", "photo", "photo", "texture")  # when no scene source is given
SCENE_SIZE = 64  # scenes are rendered at this size, then resized


class SceneSource(Protocol):
    """Where flat-colour scenes come from: ``sample_scene(rng)`` draws one, ``render(scene, size)`` draws it
    (a PIL image or an RGB array). The shapes world's ``sdlab.mini.world`` is one; the CLI passes it in."""

    def sample_scene(self, rng: np.random.Generator) -> Any: ...

    def render(self, scene: Any, size: int) -> Any: ...
EVAL_SIZE, EVAL_MIN_SIDE = 512, 256


@lru_cache(maxsize=2)
def _photos(group: str = "calibration") -> tuple[tuple[str, np.ndarray], ...]:
    """One group of scikit-image's images, as shipped (cached: decoding them takes a moment)."""
    names = {"calibration": CALIBRATION_PHOTOS, "evaluation": EVALUATION_PHOTOS}[group]
    return tuple((name, load_sample(name)) for name in names)


def _square_crop(rng: np.random.Generator, photo: np.ndarray, low: int, high: int) -> tuple[np.ndarray, str]:
    h, w = photo.shape[:2]
    side = int(rng.integers(min(low, min(h, w)), min(high, min(h, w)) + 1))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = photo[top : top + side, left : left + side]
    flip = int(rng.integers(3))
    crop = crop[:, ::-1] if flip == 1 else crop[::-1] if flip == 2 else crop
    return np.ascontiguousarray(crop), f"crop{side}@{top},{left}-flip{flip}"


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.LANCZOS))


def tint(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Map the luminance of ``image`` through a ramp between two random colours."""
    lum = image.astype(np.float32).mean(axis=2, keepdims=True) / 255
    low, high = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    return np.clip(low + lum * (high - low), 0, 255).round().astype(np.uint8)


def photo_variant(rng: np.random.Generator, size: int | None = None) -> tuple[str, np.ndarray]:
    """A calibration photo: random crop (35–100 % of the short side), maybe flipped, maybe tinted, resized to ``size``."""
    photos = _photos("calibration")
    name, photo = photos[rng.integers(len(photos))]
    crop, where = _square_crop(rng, photo, int(min(photo.shape[:2]) * 0.35), min(photo.shape[:2]))
    tinted = bool(rng.integers(2)) and bool((crop.max(axis=2) == crop.min(axis=2)).all())  # grayscale ones only
    if tinted:
        crop = tint(rng, crop)
    size = size or int(rng.choice(SIZES))
    return f"{name}{'-tinted' if tinted else ''}-{where}-{size}", _resize(crop, size)


def scene_image(rng: np.random.Generator, size: int | None, scenes: SceneSource) -> tuple[str, np.ndarray]:
    """A scene of ``scenes``, rendered at 64 px and resized to ``size``."""
    size = size or int(rng.choice(SIZES))
    scene = scenes.sample_scene(rng)
    small = Image.fromarray(np.asarray(scenes.render(scene, size=SCENE_SIZE))).convert("RGB")
    big = np.asarray(small.resize((size, size), Image.BICUBIC))
    return f"scene-{getattr(scene, 'shape', 'scene')}-{size}", big


def texture_image(rng: np.random.Generator, size: int | None = None) -> tuple[str, np.ndarray]:
    """Smooth colour noise (a Gaussian low-pass random field, filtered in the Fourier domain) with a little grain."""
    size = size or int(rng.choice(SIZES))
    sigma = rng.uniform(2, 24)
    white = rng.normal(size=(3, size, size))
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :]
    gain = np.exp(-2 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    field = np.fft.irfft2(np.fft.rfft2(white) * gain, s=(size, size)).transpose(1, 2, 0)
    field = (field - field.mean()) / (field.std() + 1e-9)
    grain = rng.normal(scale=rng.uniform(0, 4), size=field.shape)
    pixels = 128 + 50 * field + grain
    return f"texture-s{sigma:.0f}-{size}", np.clip(pixels, 0, 255).round().astype(np.uint8)


def clean_images(n: int, seed: int = 0, size: int | None = None, kinds: tuple[str, ...] | None = None,
                 scenes: SceneSource | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """``n`` unmarked (name, RGB) calibration images; ``size=None`` mixes sizes from 256 to 768. No evaluation photo.

    ``kinds`` cycles through "photo", "scene" and "texture" (default :data:`KINDS` with a ``scenes``
    source, :data:`KINDS_WITHOUT_SCENES` without one).
    """
    kinds = kinds or (KINDS if scenes is not None else KINDS_WITHOUT_SCENES)
    unknown = set(kinds) - {"photo", "scene", "texture"}
    if unknown:
        raise invalid("kinds", kinds, "photo, scene or texture")
    if "scene" in kinds and scenes is None:
        raise invalid("scenes", scenes, "a scene source (e.g. sdlab.mini.world) when kinds include 'scene'")
    makers = {"photo": photo_variant, "scene": lambda rng, size: scene_image(rng, size, scenes), "texture": texture_image}
    rng = np.random.default_rng([seed, 7919])
    for i in range(n):
        kind = kinds[i % len(kinds)]
        name, image = makers[kind](rng, size)
        yield f"{i:04d}-{name}", image


def evaluation_photos(n: int, seed: int = 0, size: int = EVAL_SIZE, min_side: int = EVAL_MIN_SIDE) -> Iterator[tuple[str, np.ndarray]]:
    """The held-out test set of the detection target: ``n`` 512² photos, none of them seen by the calibration.

    Image ``i`` comes from ``EVALUATION_PHOTOS[i % 8]`` (every natural colour photo
    scikit-image bundles): a square crop whose side is drawn uniformly between
    ``min_side`` (256) and the photo's short side, at a random position, flipped
    (none / left-right / up-down, equally likely), resized to ``size`` with
    Lanczos. So no image is enlarged more than 2x (a 144 px crop blown up 3.5x
    is not a 512² photo), and large photos (hubble, retina) are also shrunk.
    """
    photos = _photos("evaluation")
    rng = np.random.default_rng([seed, 104729])
    for i in range(n):
        name, photo = photos[i % len(photos)]
        crop, where = _square_crop(rng, photo, min_side, min(photo.shape[:2]))
        yield f"{i:04d}-{name}-{where}", _resize(crop, size)
