"""Condition maps from ordinary images, as A1111's ControlNet extension's preprocessors make them.

A ControlNet does not see the user's image: it sees a *condition map* drawn from
it by a preprocessor (Canny edges, a segmentation, a depth estimate). Every map
comes back as an RGB PIL image in the form ControlNet checkpoints were trained
on: white (255) edges or region on black (0), and depth with near = white.

Kinds (``CONTROL_TYPES``) and the preprocessors ("modules", as A1111 calls
them) each kind may use (``MODULES``, the first is the default):

- ``edges``: ``canny`` — the extension's default (``cv2.Canny(img, 100, 200)``
  on 0-255 pixels); here scikit-image's Canny with the same thresholds on the
  same scale, no smoothing (``sigma=0``, as OpenCV), run on each colour channel
  and joined, as OpenCV takes the strongest channel. ``outline`` — the exact
  1-pixel boundary of the subject's region (fill50k's circle outlines).
- ``mask``: ``mask`` — the subject's region: pixels that differ from the
  background colour (the median colour along the border) by more than half of
  the strongest difference; on the shapes world this is the rendered shape
  (coverage > 0.5). A real photo's subject needs the user's own mask, passed as
  a ready map (``control_preprocessed``).
- ``depth``: ``none`` — the user's own depth map passed through (as RGB); an
  estimator (MiDaS, ZoE) would need downloaded weights.

A ready-made map is never preprocessed (A1111's module ``none``).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..images import ImageLike, load_rgb
from ..validation import Interval, Options, invalid, validate_params

CONTROL_TYPES = ("edges", "mask", "depth")
MODULES: dict[str, tuple[str, ...]] = {"edges": ("canny", "outline"), "mask": ("mask",), "depth": ("none",)}
CANNY_LOW, CANNY_HIGH = 100, 200  # A1111's ControlNet canny defaults (Threshold A/B), on 0-255 pixels

_CONSTRAINTS = {
    "control_type": [Options(CONTROL_TYPES)],
    "low": [Interval(float, 0, 255)],
    "high": [Interval(float, 0, 255 * 8)],
}


def _to_map(binary: np.ndarray) -> Image.Image:
    """A boolean (H, W) array as white-on-black RGB."""
    gray = np.where(binary, 255, 0).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=2), "RGB")


def canny(image: ImageLike, low: float = CANNY_LOW, high: float = CANNY_HIGH) -> Image.Image:
    """Canny edges, white on black, with A1111's thresholds on 0-255 pixels.

    scikit-image's Canny measures the gradient as the Euclidean norm of the Sobel
    pair, OpenCV's default as the L1 norm (larger), so at the same thresholds a
    faint edge OpenCV keeps may be dropped here; a shape's edges are found by both.
    """
    from skimage.feature import canny as _canny

    validate_params({"low": low, "high": high}, _CONSTRAINTS)
    if high < low:
        raise invalid("high", high, f"a threshold >= low ({low:g})")
    rgb = load_rgb(image)
    found = np.zeros(rgb.shape[:2], dtype=bool)
    for c in range(3):  # per channel: a red shape on a teal ground may have almost no luminance edge
        found |= _canny(rgb[..., c], sigma=0.0, low_threshold=float(low), high_threshold=float(high), mode="nearest")
    return _to_map(found)


def subject_region(image: ImageLike) -> np.ndarray:
    """Boolean (H, W): pixels farther from the background colour than half the strongest difference.

    The background colour is the median along the image's border. An anti-aliased
    pixel with coverage ``a`` lies ``a * |shape - background|`` from the background,
    so the cut at half the strongest difference keeps the pixels more than half covered.
    """
    rgb = load_rgb(image).astype(np.float32)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    distance = np.linalg.norm(rgb - background, axis=2)
    strongest = float(np.percentile(distance, 99.5))
    if strongest < 8.0:  # a flat image: no subject
        return np.zeros(distance.shape, dtype=bool)
    return distance > 0.5 * strongest


def mask(image: ImageLike) -> Image.Image:
    """The subject's region, white on black (see :func:`subject_region`)."""
    return _to_map(subject_region(image))


def outline(image: ImageLike) -> Image.Image:
    """The exact 1-pixel inner boundary of the subject's region, white on black."""
    from scipy.ndimage import binary_erosion

    region = subject_region(image)
    inner = binary_erosion(region, structure=np.ones((3, 3), bool), border_value=0)
    return _to_map(region & ~inner)


def passthrough(image: ImageLike) -> Image.Image:
    """A ready map as RGB (grayscale depth repeated on three channels), pixels unchanged."""
    return Image.fromarray(load_rgb(image), "RGB")


_FUNCTIONS = {"canny": canny, "outline": outline, "mask": mask, "none": passthrough}


def check_module(control_type: str, module: str | None) -> str:
    """The preprocessor a kind uses: ``module`` if the kind allows it, else the kind's default."""
    validate_params({"control_type": control_type}, _CONSTRAINTS)
    if module is None:
        return MODULES[control_type][0]
    if module not in MODULES[control_type]:
        raise invalid("module", module, f"for {control_type}: one of " + ", ".join(MODULES[control_type]))
    return module


def preprocess(
    image: ImageLike,
    control_type: str,
    module: str | None = None,
    low: float = CANNY_LOW,
    high: float = CANNY_HIGH,
    preprocessed: bool = False,
) -> Image.Image:
    """The condition map of ``image`` for ``control_type`` (RGB PIL, same size as the image).

    ``preprocessed=True`` passes a ready map through unchanged (A1111's module ``none``).
    ``low``/``high`` are Canny's thresholds (A1111's Threshold A/B); other modules ignore them.
    """
    validate_params({"control_type": control_type}, _CONSTRAINTS)
    if preprocessed or module == "none":  # A1111's module none: the map as given, whatever the kind
        return passthrough(image)
    module = check_module(control_type, module)
    if module == "none":
        return passthrough(image)
    if module == "canny":
        return canny(image, low, high)
    return _FUNCTIONS[module](image)
