"""The shapes world's data for ControlNet: images, captions, condition maps and the true shape masks.

A scene's condition maps are what the core's preprocessors (:mod:`sdlab.control.preprocess`) draw from
its rendered image, exactly as a user's image is turned into a map at generation time: ``edges`` as
Canny edges and as the exact 1-pixel outline (fill50k's circle outlines; both are trained on, one drawn
per sample, so either kind of edge map works), ``mask`` as the shape's region. The truth a generation
is measured against is the renderer's own coverage (:func:`world.render_mask` > 0.5): the control's
filled region. The conditioning lab receives all of this as arrays; it never imports this module.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from ..control.preprocess import preprocess, subject_region
from ..validation import NON_NEGATIVE_INT, POSITIVE_INT, Options, validate_params
from . import world

CONDITIONS = ("edges", "mask")
TRAIN_MODULES = {"edges": ("canny", "outline"), "mask": ("mask",)}  # the preprocessors a ControlNet of each kind learns from
HELDOUT_SEED = 24_000_001  # held-out scenes: a seed no training set uses


def _check(n: int, seed: int, condition: str) -> None:
    validate_params({"n": n, "seed": seed, "condition": condition},
                    {"n": [POSITIVE_INT], "seed": [NON_NEGATIVE_INT], "condition": [Options(CONDITIONS)]})


def condition_maps(images: np.ndarray, condition: str, module: str | None = None) -> np.ndarray:
    """uint8 (N, H, W, 3) maps of ``images`` by the core's preprocessor for ``condition`` (and ``module``)."""
    return np.stack([np.asarray(preprocess(im, condition, module=module)) for im in images])


def truth_masks(meta: pd.DataFrame, size: int = world.IMAGE_SIZE) -> np.ndarray:
    """Bool (N, H, W): where each scene's shape covers more than half a pixel (the control's filled region)."""
    return np.stack([world.render_mask(r.shape, r.cx, r.cy, r.radius, r.rotation, size) > 0.5 for r in meta.itertuples()])


def training_data(n: int, condition: str, seed: int = 0) -> dict:
    """``n`` scenes with their training captions and condition maps (one array per preprocessor of the kind).

    Returns ``images`` (uint8 N x 64 x 64 x 3), ``captions`` (the world's own alt-text captions, so the
    colours come from the prompt and the layout from the map), ``maps`` (list of uint8 arrays), ``masks``
    (the true shapes, bool N x 64 x 64: the training's focus) and ``meta``.
    """
    _check(n, seed, condition)
    images, meta = world.make_dataset(n, seed=seed)
    maps = [condition_maps(images, condition, m) for m in TRAIN_MODULES[condition]]
    return {"images": images, "captions": meta["TEXT"].tolist(), "maps": maps, "masks": truth_masks(meta), "meta": meta}


def heldout_cases(n: int = 100, condition: str = "edges", seed: int = HELDOUT_SEED, module: str | None = None) -> dict:
    """``n`` held-out scenes: a fully specified prompt and a generation seed each, the control map of the
    scene's image, and the truth mask. ``module`` picks the preprocessor (edges: ``outline`` by default)."""
    _check(n, seed, condition)
    module = module or ("outline" if condition == "edges" else "mask")
    images, meta = world.make_dataset(n, seed=seed)
    rng = np.random.default_rng(seed)
    prompts = [world.describe(r.shape, r.colour, r.size, r.position, r.background) for r in meta.itertuples()]
    table = pd.DataFrame({"prompt": prompts, "seed": rng.integers(0, 2**31, n),
                          **{k: meta[k] for k in ("shape", "colour", "size", "position", "background")}})
    return {"table": table, "images": images, "maps": condition_maps(images, condition, module), "masks": truth_masks(meta)}


def shape_region(image: np.ndarray) -> np.ndarray:
    """Bool (H, W): the generated shape, the largest connected region the core's subject finder keeps
    (specks of noise elsewhere are not the shape)."""
    region = subject_region(np.asarray(image))
    labels, count = ndimage.label(region)
    if count <= 1:
        return region
    sizes = ndimage.sum_labels(region, labels, index=range(1, count + 1))
    return labels == 1 + int(np.argmax(sizes))


def conflict_cases(seed: int = 7) -> pd.DataFrame:
    """Prompt against control: the prompt names one position or shape, the outline draws another.

    One row per case: ``kind`` (position or shape), the ``prompt``, what the prompt says and what the
    control says, and the control scene's attributes (to draw its outline).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for colour, background in (("red", "white"), ("blue", "pink"), ("yellow", "teal"), ("green", "black")):
        for prompt_pos, control_pos in (("top left", "bottom right"), ("bottom right", "top left"), ("left", "right")):
            scene = world.sample_scene(rng, shape="circle", colour=colour, size="large", position=control_pos, background=background)
            rows.append({"kind": "position", "prompt": world.describe("circle", colour, "large", prompt_pos, background),
                         "prompt_says": prompt_pos, "control_says": control_pos, "scene": scene})
        for prompt_shape, control_shape in (("circle", "square"), ("square", "circle"), ("cross", "triangle")):
            scene = world.sample_scene(rng, shape=control_shape, colour=colour, size="large", position="center", background=background)
            rows.append({"kind": "shape", "prompt": world.describe(prompt_shape, colour, "large", "center", background),
                         "prompt_says": prompt_shape, "control_says": control_shape, "scene": scene})
    table = pd.DataFrame(rows)
    table["seed"] = rng.integers(0, 2**31, len(table))
    return table


def scene_images(scenes) -> np.ndarray:
    """The rendered images of a sequence of scenes (uint8 N x 64 x 64 x 3)."""
    return np.stack([np.asarray(world.render(s)) for s in scenes])


def layout_cases(n: int = 16, condition: str = "edges", seed: int = HELDOUT_SEED + 1) -> dict:
    """depth2img's lesson on the shapes world: keep an input image's layout while the prompt changes its colours.

    ``n`` held-out scenes; each new prompt keeps the shape, size and position and asks for another shape colour
    and background (``want_colour``, ``want_background``). Returns ``table``, the input ``images``, their
    condition ``maps`` (the kind's default preprocessor run on the input) and ``masks`` (the input's shape).
    """
    _check(n, seed, condition)
    images, meta = world.make_dataset(n, seed=seed)
    rng = np.random.default_rng(seed)
    rows = []
    for r in meta.itertuples():
        colour = rng.choice([c for c in world.COLOURS if c != r.colour])
        background = rng.choice([b for b in world.BACKGROUNDS if b not in (r.background, colour)])
        rows.append({"prompt": world.describe(r.shape, str(colour), r.size, r.position, str(background)), "seed": int(rng.integers(2**31)),
                     "want_colour": str(colour), "want_background": str(background), "was_colour": r.colour, "was_background": r.background})
    module = "outline" if condition == "edges" else "mask"
    return {"table": pd.DataFrame(rows), "images": images, "maps": condition_maps(images, condition, module), "masks": truth_masks(meta)}
