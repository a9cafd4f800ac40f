"""Content checks that show where learned codecs fail: text, small faces, fine texture.

PSNR over a whole image hides the failures Bühlmann reported for the SD VAE
codec: letters become letter-like strokes, small faces become other faces,
texture is replaced by plausible texture. Each case here pairs an offline
scikit-image picture with a measure on the part that matters:

- ``text`` / ``page``: edge F1 (Canny edges of the decoded image against the
  original's, within ``tolerance`` pixels) on text regions. Legible text keeps
  its stroke edges; smeared or invented strokes lower precision and recall.
- ``faces``: 16 faces from ``lfw_subset`` (25x25 px each) on a photo
  background; PSNR on the face boxes against PSNR on the rest.
- ``astronaut``: the face found by scikit-image's LBP face cascade; same split.
- ``texture``: ``gravel``; the ratio of high-frequency energy (Laplacian
  standard deviation) decoded/original: < 1 smoothed away, ~1 kept or replaced.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import ValidationError
from ..images import load_rgb, sample_photos
from ..metrics import psnr
from ..progress import Callback, Reporter
from ..validation import POSITIVE, POSITIVE_INT, Check, invalid, validate_params

Box = tuple[int, int, int, int]  # top, left, bottom, right


def _gray(image: np.ndarray) -> np.ndarray:
    return load_rgb(image).astype(np.float64) @ np.array([0.299, 0.587, 0.114])


# -- measures -------------------------------------------------------------------------------------
def edge_f1(reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None = None,
            sigma: float = 1.0, tolerance: int = 1) -> float:
    """F1 of the test image's Canny edges against the reference's, matching within ``tolerance`` px.

    1.0: every edge kept, none invented. NaN when neither image has an edge in ``mask``.
    """
    from scipy.ndimage import binary_dilation
    from skimage.feature import canny

    if np.shape(reference) != np.shape(test):
        raise ValidationError(f"test: shape {np.shape(test)} is not valid; valid: the reference's shape {np.shape(reference)}")
    ref_e = canny(_gray(reference) / 255.0, sigma=sigma)
    test_e = canny(_gray(test) / 255.0, sigma=sigma)
    if mask is not None:
        ref_e, test_e = ref_e & mask, test_e & mask
    n_ref, n_test = int(ref_e.sum()), int(test_e.sum())
    if n_ref == 0 and n_test == 0:
        return math.nan
    if n_ref == 0 or n_test == 0:
        return 0.0
    structure = np.ones((2 * tolerance + 1, 2 * tolerance + 1), bool)
    precision = (test_e & binary_dilation(ref_e, structure)).sum() / n_test
    recall = (ref_e & binary_dilation(test_e, structure)).sum() / n_ref
    return float(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))


def text_mask(image: np.ndarray, grow: int = 4) -> np.ndarray:
    """Text regions: Sauvola-thresholded dark strokes, grown by ``grow`` px."""
    from scipy.ndimage import binary_dilation, binary_opening
    from skimage.filters import threshold_sauvola

    gray = _gray(image) / 255.0  # Sauvola's dynamic range assumes [0, 1] for floats
    strokes = gray < threshold_sauvola(gray, window_size=25, k=0.3)
    strokes = binary_opening(strokes, np.ones((2, 2), bool))
    return binary_dilation(strokes, np.ones((2 * grow + 1, 2 * grow + 1), bool))


def boxes_mask(shape: tuple[int, ...], boxes: Sequence[Box]) -> np.ndarray:
    mask = np.zeros(shape[:2], bool)
    for top, left, bottom, right in boxes:
        mask[top:bottom, left:right] = True
    return mask


def region_psnr(reference: np.ndarray, test: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """PSNR (dB) inside ``mask`` and outside it."""
    out = {}
    for key, m in (("inside", mask), ("outside", ~mask)):
        out[key] = psnr(reference[m], test[m]) if m.any() else math.nan
    return out


def detail_ratio(reference: np.ndarray, test: np.ndarray) -> float:
    """Std of the Laplacian of ``test`` over that of ``reference``: high-frequency energy kept."""
    from scipy.ndimage import laplace

    ref = laplace(_gray(reference)).std()
    return float(laplace(_gray(test)).std() / ref) if ref > 0 else math.nan


def detect_faces(image: np.ndarray, min_size: int = 40, max_size: int = 300) -> list[Box]:
    """Face boxes from scikit-image's bundled LBP frontal-face cascade (offline)."""
    from skimage import data, feature

    detector = feature.Cascade(data.lbp_frontal_face_cascade_filename())
    found = detector.detect_multi_scale(img=load_rgb(image), scale_factor=1.2, step_ratio=1,
                                        min_size=(min_size, min_size), max_size=(max_size, max_size))
    return [(d["r"], d["c"], d["r"] + d["height"], d["c"] + d["width"]) for d in found]


# -- cases ----------------------------------------------------------------------------------------
@dataclass
class ContentCase:
    """An image, the region that matters, and the measure that shows the failure."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    measure: str  # column name of the content measure
    what: str  # one line for plots and tables
    boxes: list[Box] = field(default_factory=list)

    def evaluate(self, test: np.ndarray) -> dict[str, float]:
        """The content measure plus PSNR inside and outside the region."""
        regions = region_psnr(self.image, test, self.mask)
        out = {"psnr_region": regions["inside"], "psnr_rest": regions["outside"]}
        if self.measure == "edge_f1":
            out["value"] = edge_f1(self.image, test, self.mask)
        elif self.measure == "detail_ratio":
            out["value"] = detail_ratio(self.image, test)
        else:  # face cases: the region's PSNR deficit against the rest, in dB
            out["value"] = out["psnr_rest"] - out["psnr_region"]
        return out


def small_faces_image(size: int = 256, n: int = 16, seed: int = 0) -> tuple[np.ndarray, list[Box]]:
    """``n`` 25x25 faces from ``lfw_subset`` on a grid over a photo background, and their boxes."""
    from skimage import data

    faces = (data.lfw_subset()[:100] * 255).round().astype(np.uint8)  # the first 100 are faces
    rng = np.random.default_rng(seed)
    background = sample_photos(size, ("coffee",))["coffee"].copy()
    side = int(math.ceil(math.sqrt(n)))
    cell = size // side
    if cell < 25:
        raise invalid("size", size, f"a whole number >= {25 * side} (room for {n} faces of 25 px)")
    boxes = []
    for i, face_idx in enumerate(rng.choice(len(faces), n, replace=False)):
        r, c = divmod(i, side)
        top = r * cell + int(rng.integers(0, cell - 25 + 1))
        left = c * cell + int(rng.integers(0, cell - 25 + 1))
        background[top : top + 25, left : left + 25] = faces[face_idx][..., None]
        boxes.append((top, left, top + 25, left + 25))
    return background, boxes


def content_cases(size: int = 256) -> dict[str, ContentCase]:
    """The standard failure cases, all from scikit-image's bundled data (offline)."""
    from skimage import data

    cases: dict[str, ContentCase] = {}
    for name in ("text", "page"):
        image = load_rgb(getattr(data, name)())
        cases[name] = ContentCase(name, image, text_mask(image), "edge_f1", "edge F1 on text regions (1 = legible)")
    faces, boxes = small_faces_image(size)
    cases["faces"] = ContentCase("faces", faces, boxes_mask(faces.shape, boxes), "psnr_deficit",
                                 "PSNR rest - PSNR on 25-px faces, dB (> 0: faces suffer more)", boxes)
    astro = sample_photos(2 * size, ("astronaut",))["astronaut"]
    face_boxes = detect_faces(astro) or [(70 * astro.shape[0] // 512, 175 * astro.shape[0] // 512,
                                          163 * astro.shape[0] // 512, 268 * astro.shape[0] // 512)]
    cases["astronaut"] = ContentCase("astronaut", astro, boxes_mask(astro.shape, face_boxes), "psnr_deficit",
                                     "PSNR rest - PSNR on the face, dB", face_boxes)
    gravel = load_rgb(np.asarray(Image.fromarray(data.gravel()).resize((size, size), Image.LANCZOS)))
    cases["texture"] = ContentCase("texture", gravel, np.ones(gravel.shape[:2], bool), "detail_ratio",
                                   "Laplacian energy decoded/original (1 = detail kept)")
    return cases


CONTENT_CONSTRAINTS = {
    "bpp": [Check(lambda b: len(b) > 0 and all(POSITIVE.accepts(x) for x in b), "a non-empty list of numbers > 0")],
    "size": [POSITIVE_INT],
    "keep_images": [bool],
    "progress": [bool],
}


def content_checks(codecs: dict, bpp: Sequence[float] = (0.15, 0.3, 0.6), size: int = 256,
                   cases: dict[str, ContentCase] | None = None, keep_images: bool = False,
                   callback: Callback | None = None, progress: bool = False):
    """One row per case x codec x rate: bytes, PSNR in/out of the region, the content measure.

    Budgets are given in bits per pixel because the cases differ in size;
    each becomes ``floor(bpp * H * W / 8)`` bytes for that image.
    ``keep_images`` keeps the ``decoded`` column for :func:`~.plots.failure_panel`.
    ``callback`` follows the rows of all cases together.
    """
    import pandas as pd

    from .rd import rd_curves

    validate_params({"bpp": bpp, "size": size, "keep_images": keep_images, "progress": progress}, CONTENT_CONSTRAINTS)
    cases = cases if cases is not None else content_cases(size)
    plan = {name: sorted({max(1, int(b * c.image.shape[0] * c.image.shape[1] / 8)) for b in bpp})
            for name, c in cases.items()}
    total, done = len(codecs) * sum(len(b) for b in plan.values()), 0
    frames = []
    with Reporter(callback, progress, desc="content") as report:
        for name, case in cases.items():
            frame = rd_curves({name: case.image}, codecs, plan[name], metrics=("psnr",), keep_images=True,
                              callback=lambda d, _t, base=done: report(base + d, total))
            done += len(frame)
            decoded = frame["decoded"] if keep_images else frame.pop("decoded")
            extra = [case.evaluate(img) if img is not None else {} for img in decoded]
            for key in ("value", "psnr_region", "psnr_rest"):
                frame[key] = [e.get(key, math.nan) for e in extra]
            frame["case"], frame["measure"] = name, case.measure
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)
