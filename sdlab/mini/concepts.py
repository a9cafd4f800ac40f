"""Concepts the shipped shapes-world model never learned, with known truth, for fine-tuning lessons.

Four concepts of the three kinds the article's fine-tuning section needs:

- ``star``: a **new shape** (a five-pointed star). The model has no weights that draw
  it, so only methods that change the UNet (LoRA, DreamBooth) can learn it;
  textual inversion can only search the text side for something the model can
  already draw.
- ``sun``: a **reachable subject**, a new word for a yellow circle. The model draws
  yellow circles already; it only lacks the name, which textual inversion can find.
- ``ruby``: a **new colour word** for red, on any shape: reachable too, and red is the colour
  the model draws best (its large yellow circles on white often come out pale-centred, so
  prompted "yellow circle" it draws the sun right only 86-91 % of the time; "red": 95 %).
- ``outlined``: a **style**, any shape drawn as an outline instead of filled. The
  checker tells the two apart, so a hypernetwork's or a LoRA's style can be scored.

Each concept has a small fine-tuning set (5-50 images, as users' are) drawn from
*some* colours and positions only, and evaluation prompts that are either like
the fine-tuning set (``seen``) or use colours and positions it never showed
(``held_out``), so generalisation is measured. The world's own datasets,
captions, seeds and checker (:mod:`.world`, :mod:`.checker`) are not changed:
this module only adds to them. :func:`check` reads everything :func:`.checker.check`
reads, plus the star and the style.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from scipy import ndimage

from ..validation import POSITIVE_INT, SEED, Interval, Options, validate_params
from . import checker, world

STAR_INNER = 0.45  # inner radius of the star's points, as a share of the outer radius
OUTLINE_WIDTH = (2.5, 0.35)  # outline wall: max(2.5 px, 0.35 x radius)
STYLES = ("filled", "outlined")
ALL_SHAPES = world.SHAPES + ("star",)
ATTRIBUTES = checker.ATTRIBUTES + ("style",)
SOLIDITY_SPLIT = 0.8  # mean coverage inside the filled outline: filled shapes ~0.95, outlines ~0.6
TRAIN_COLOURS = ("red", "green", "blue", "yellow")  # what fine-tuning sets show; the rest are held out
TRAIN_POSITIONS = ("top left", "top", "left", "center", "bottom left", "bottom")  # right column held out


@dataclass(frozen=True)
class Concept:
    """One concept: what it is, its default trigger word and class word, what its images fix."""

    name: str
    kind: str  # "new shape", "reachable subject", "colour word" (a reachable subject that names a colour) or "style"
    token: str  # default trigger: a word the shapes world's tokenizer splits into bytes (no vocabulary entry)
    class_word: str  # DreamBooth's class ("a <token> <class>"); its prior is what prior preservation keeps
    init_word: str  # textual inversion starts the new vector here (diffusers' --initializer_token)
    shape: str | None = None  # fixed shape (None: any of the world's four)
    colour: str | None = None  # fixed colour (None: any)
    size: str | None = None  # fixed size (None: any). Stars and outlines are large: the shipped VAE decodes a small
    # star (radius 5-8 px) as a blob (0 of 20 read back as stars, large ones 20 of 20), a small outlined cross has no hole
    style: str = "filled"
    plain: str | None = None  # the world's own words for a reachable concept: what textual inversion can reach at best


CONCEPTS = {
    "star": Concept("star", "new shape", "star", "cross", "cross", shape="star", size="large"),
    "sun": Concept("sun", "reachable subject", "sun", "circle", "circle", shape="circle", colour="yellow", plain="yellow circle"),
    "ruby": Concept("ruby", "colour word", "ruby", "red", "a", colour="red", plain="red"),
    "outlined": Concept("outlined", "style", "outlined", "", "a", size="large", style="outlined"),
}
CONCEPT_CONSTRAINTS = {"concept": [Options(CONCEPTS)], "n": [Interval(int, 1, 500)], "seed": [SEED],
                       "split": [Options(("train", "seen", "held_out"))], "size": [Interval(int, 8, 512)]}


def concept(name: str) -> Concept:
    """The :class:`Concept` called ``name``, or a one-line refusal naming the known ones."""
    validate_params({"concept": name}, CONCEPT_CONSTRAINTS)
    return CONCEPTS[name]


def outline(shape: str, cx: float, cy: float, radius: float, rotation: float) -> list[tuple[float, float]]:
    """Polygon vertices of any shape here: the world's four (:func:`world.shape_outline`) or the star."""
    if shape != "star":
        return world.shape_outline(shape, cx, cy, radius, rotation)
    angles = [-math.pi / 2 + k * math.pi / 5 for k in range(10)]
    pts = [((1.0 if k % 2 == 0 else STAR_INNER) * math.cos(a), (1.0 if k % 2 == 0 else STAR_INNER) * math.sin(a))
           for k, a in enumerate(angles)]
    theta = math.radians(rotation)
    c, s = math.cos(theta), math.sin(theta)
    return [(cx + radius * (x * c - y * s), cy + radius * (x * s + y * c)) for x, y in pts]


def render_mask(shape: str, cx: float, cy: float, radius: float, rotation: float, size: int = world.IMAGE_SIZE,
                style: str = "filled") -> np.ndarray:
    """Anti-aliased coverage in [0, 1]; ``outlined`` keeps a wall of :data:`OUTLINE_WIDTH` inside the edge."""
    k = world.SUPERSAMPLE
    scale = size / world.IMAGE_SIZE  # scenes are laid out on the 64-pixel grid; other sizes scale it
    canvas = Image.new("L", (size * k, size * k), 0)
    draw = ImageDraw.Draw(canvas)
    draw.polygon([(x * k * scale, y * k * scale) for x, y in outline(shape, cx, cy, radius, rotation)], fill=255)
    if style == "outlined":
        inner = radius - max(OUTLINE_WIDTH[0], OUTLINE_WIDTH[1] * radius)
        draw.polygon([(x * k * scale, y * k * scale) for x, y in outline(shape, cx, cy, inner, rotation)], fill=0)
    return np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


def render(scene: world.Scene, style: str = "filled", size: int = world.IMAGE_SIZE) -> Image.Image:
    """The RGB image of ``scene`` (whose shape may be the star) in ``style``, ``size`` pixels square."""
    alpha = render_mask(scene.shape, scene.cx, scene.cy, scene.radius, scene.rotation, size, style)[..., None]
    pixels = alpha * np.asarray(scene.shape_rgb, np.float32) + (1.0 - alpha) * np.asarray(scene.background_rgb, np.float32)
    return Image.fromarray(np.round(pixels).astype(np.uint8), "RGB")


def _scene(rng: np.random.Generator, shape: str, **fixed: str) -> world.Scene:
    """A world scene with ``shape`` (the star is drawn from a square's scene: same jitter, new outline)."""
    base = world.sample_scene(rng, shape="square" if shape == "star" else shape, **fixed)
    return world.Scene(**{**base.__dict__, "shape": shape})


def _attributes(c: Concept, split: str, rng: np.random.Generator) -> dict[str, str]:
    """Discrete attributes of one image of ``c``: train/seen draw from the fine-tuning colours and
    positions, held_out from the others (a concept that fixes its colour holds out positions only)."""
    held = split == "held_out"
    colours = [x for x in world.COLOURS if (x not in TRAIN_COLOURS) == held]
    positions = [p for p in world.POSITIONS if (p not in TRAIN_POSITIONS) == held]
    while True:
        attrs = {
            "shape": c.shape or world.SHAPES[rng.integers(len(world.SHAPES))],
            "colour": c.colour or colours[rng.integers(len(colours))],
            "size": c.size or world.SIZES[rng.integers(len(world.SIZES))],
            "position": positions[rng.integers(len(positions))],
            "background": list(world.BACKGROUNDS)[rng.integers(len(world.BACKGROUNDS))],
        }
        if attrs["colour"] != attrs["background"]:
            return attrs


def caption(c: Concept, attrs: dict[str, str], trigger: str) -> str:
    """The prompt for ``attrs`` with ``trigger`` in the concept's place.

    New shape and subject: the trigger replaces the shape word (and the colour, which the subject
    fixes): ``a large red star at the top left on a white background``; style: the trigger comes
    before the shape (``a large red outlined square ...``; an empty trigger leaves the plain caption);
    colour word: the trigger replaces the colour (``a large ruby square ...``).
    """
    if c.kind == "colour word":
        return world.describe(attrs["shape"], colour=trigger, size=attrs["size"], position=attrs["position"], background=attrs["background"])
    if c.kind == "style":
        subject = f"{trigger} {attrs['shape']}".strip()
    else:
        subject = trigger
    colour = None if c.colour else attrs["colour"]
    return world.describe(subject, colour=colour, size=attrs["size"], position=attrs["position"], background=attrs["background"])


def make_set(name: str, n: int = 20, seed: int = 0, trigger: str | None = None, size: int = world.IMAGE_SIZE,
             split: str = "train") -> tuple[np.ndarray, pd.DataFrame]:
    """``n`` images of concept ``name`` (uint8, N x size x size x 3) and a table of their attributes and
    captions (``TEXT``, with ``trigger``, default the concept's token).

    ``split="train"`` is a fine-tuning set (the :data:`TRAIN_COLOURS` and :data:`TRAIN_POSITIONS`
    only); ``size`` other than 64 draws the same scenes at another resolution (the article's
    "images at another size than the training").
    """
    validate_params({"concept": name, "n": n, "seed": seed, "split": split, "size": size}, CONCEPT_CONSTRAINTS)
    c = CONCEPTS[name]
    trigger = c.token if trigger is None else trigger
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), np.uint8)
    rows = []
    for i in range(n):
        attrs = _attributes(c, split, rng)
        scene = _scene(rng, **attrs)
        images[i] = np.asarray(render(scene, c.style, size))
        rows.append({**attrs, "style": c.style, "TEXT": caption(c, attrs, trigger)})
    return images, pd.DataFrame(rows)


def evaluation_prompts(name: str, trigger: str | None = None, n: int = 48, split: str = "held_out", seed: int = 4321) -> pd.DataFrame:
    """Prompts for concept ``name`` with the attributes a right image has (columns as
    :func:`world.evaluation_prompts`, plus ``style``, ``split`` and ``concept``)."""
    validate_params({"concept": name, "n": n, "seed": seed, "split": split}, CONCEPT_CONSTRAINTS)
    c = CONCEPTS[name]
    trigger = c.token if trigger is None else trigger
    rng = np.random.default_rng(seed + (0 if split == "seen" else 1))
    rows = []
    for _ in range(n):
        attrs = _attributes(c, split, rng)
        rows.append({"prompt": caption(c, attrs, trigger), "seed": int(rng.integers(2**31)), **attrs,
                     "style": c.style, "split": split, "concept": name})
    return pd.DataFrame(rows)


def class_prompts(name: str, n: int = 50, seed: int = 99) -> list[str]:
    """DreamBooth's class prompts: the fine-tuning set's captions with the class word and no trigger
    (``a large red cross at the top``): what the base model's class images are generated from."""
    c = concept(name)
    validate_params({"n": n, "seed": seed}, {"n": [POSITIVE_INT], "seed": [SEED]})
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        attrs = _attributes(c, "train", rng)
        if c.kind in ("style", "colour word"):  # the plain caption; a colour word's class is its colour
            out.append(caption(c, attrs, c.class_word))
        else:
            out.append(world.describe(c.class_word, colour=attrs["colour"], size=attrs["size"],
                                      position=attrs["position"], background=attrs["background"]))
    return out


def degrade(images: np.ndarray, low: int = 16) -> np.ndarray:
    """The article's low-resolution data: each image shrunk to ``low`` pixels and upscaled back (bicubic)."""
    validate_params({"low": low}, {"low": [Interval(int, 2, None)]})
    size = images.shape[1]
    return np.stack([np.asarray(Image.fromarray(im).resize((low, low), Image.BOX).resize((size, size), Image.BICUBIC))
                     for im in images])


def check(image: np.ndarray) -> dict[str, str | None]:
    """What :func:`.checker.check` reads, with the star among the shapes, and the ``style``."""
    found = checker.check(image)
    if found["shape"] is None:
        return {**found, "style": None}
    pixels = np.asarray(image, dtype=np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background_rgb = np.median(border, axis=0)
    foreground = np.linalg.norm(pixels - background_rgb, axis=2) > checker.FOREGROUND_DISTANCE
    labels, count = ndimage.label(foreground)
    areas = ndimage.sum_labels(foreground, labels, index=range(1, count + 1))
    region = labels == (1 + int(np.argmax(areas)))
    core = ndimage.binary_erosion(region) if region.sum() > 40 else region
    shape_rgb = np.median(pixels[core if core.any() else region], axis=0)
    direction = shape_rgb - background_rgb
    alpha = np.clip((pixels - background_rgb) @ direction / max(float(direction @ direction), 1e-6), 0.0, 1.0)
    alpha *= ndimage.binary_dilation(region, iterations=2)
    filled = ndimage.binary_fill_holes(alpha > 0.5)
    solidity = float(alpha[filled].mean()) if filled.any() else 1.0
    style = "filled" if solidity >= SOLIDITY_SPLIT else "outlined"
    solid = np.maximum(alpha, filled.astype(np.float32))  # an outline's hole counts as inside the shape
    coverage = float(solid.sum())
    cy, cx = (v + 0.5 for v in ndimage.center_of_mass(solid))
    best = (math.inf, None, 0.0)
    for shape in ALL_SHAPES:
        radius = math.sqrt(coverage / _AREA[shape])
        for rotation in (checker._ROTATIONS if shape != "circle" else (0.0,)):
            error = float(np.square(render_mask(shape, cx, cy, radius, rotation, image.shape[0]) - solid).sum())
            if error < best[0]:
                best = (error, shape, radius)
    size = "small" if best[2] < checker._SIZE_SPLIT else "large"
    return {**found, "shape": best[1], "size": size, "style": style}


def _area(shape: str) -> float:
    pts = np.asarray(outline(shape, 0.0, 0.0, 1.0, 0.0))
    return 0.5 * abs(float(np.dot(pts[:, 0], np.roll(pts[:, 1], 1)) - np.dot(pts[:, 1], np.roll(pts[:, 0], 1))))


_AREA = {s: _area(s) for s in ALL_SHAPES}


def _concept_ok(found: dict, want: pd.Series) -> dict:
    fixed = CONCEPTS[want["concept"]].colour if want.get("concept") in CONCEPTS else None
    return {"concept_ok": bool(found["shape"] == want.get("shape") and found["style"] == want.get("style", "filled")
                               and (fixed is None or found["colour"] == fixed))}


def score(images, expected: pd.DataFrame) -> pd.DataFrame:
    """As :func:`.checker.score` with :func:`check` (star and style read), plus ``concept_ok``:
    the shape and style right, and the colour too for a concept that fixes it (the sun, ruby)."""
    return checker.score(images, expected, read=check, attributes=ATTRIBUTES, more=_concept_ok)


def shape_masks(images: np.ndarray) -> np.ndarray:
    """N x H x W float masks of where each image's shape is (pixels away from the border colour), for a
    fine-tuning loss that weighs the shape up (a small shape is ~2% of the image)."""
    import torch

    from ..images import to_tensor
    from .stages.foreground import foreground

    with torch.no_grad():
        return foreground(to_tensor(np.asarray(images)))[:, 0].numpy()


WORLD_PRESERVATION_IMAGES = 200  # the world's own training images output preservation keeps the base model on (seed 6)


def world_images(n: int = WORLD_PRESERVATION_IMAGES, seed: int = 6) -> tuple[np.ndarray, list[str]]:
    """``n`` of the shapes world's own training images and their captions (not the benchmark's evaluation draws):
    ``world`` output preservation's items (:func:`sdlab.finetune.preserve.preservation_data`, ``world_data``)."""
    images, meta = world.make_dataset(n, seed=seed)
    return images, meta["TEXT"].tolist()

