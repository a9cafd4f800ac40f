"""The shapes world: scenes of one coloured shape on a background, and their captions.

A scene is a handful of discrete attributes (shape, colour, size, position,
background) plus continuous jitter (exact centre, radius, rotation, shade), so
different seeds give visibly different images of the same caption. Captions
follow ``a {size} {colour} {shape} {position phrase} on a {background}
background`` with attributes left out of a share of them, as real alt-text
does, and with skews put in on purpose (see ``datasets/shapes_world/README.md``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from ..cost import check_budget
from ..validation import NON_NEGATIVE_INT, POSITIVE_INT, Options, invalid, validate_params

IMAGE_SIZE = 64
SUPERSAMPLE = 4  # render at 4x and downsample: anti-aliased edges like a real photo

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 220), "yellow": (240, 220, 30),
    "orange": (245, 140, 20), "purple": (140, 50, 180), "white": (245, 245, 245), "black": (15, 15, 15),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250), "black": (10, 10, 10), "gray": (128, 128, 128), "pink": (250, 180, 200), "teal": (0, 128, 128),
}
SIZES = ("small", "large")
# Positions on a 3x3 grid: name -> (column, row), column 0 = left, row 0 = top.
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0), "top": (1, 0), "top right": (2, 0),
    "left": (0, 1), "center": (1, 1), "right": (2, 1),
    "bottom left": (0, 2), "bottom": (1, 2), "bottom right": (2, 2),
}
GRID_CENTRES = (16.0, 32.0, 48.0)  # pixel centre of each grid column/row
POSITION_JITTER = 3.0  # +- pixels around the grid centre
RADIUS = {"small": (5.0, 8.0), "large": (12.0, 15.0)}  # half-extent in pixels
MAX_ROTATION = 15.0  # degrees, for shapes with corners
SHADE_JITTER = 12  # +- per RGB channel for the shape, half of that for the background

# Skews put in on purpose, documented in the data card.
TRIANGLE_YELLOW_SHARE = 0.5  # triangles are yellow this often (others: uniform)
DROP = {"size": 0.25, "colour": 0.2, "position": 0.2, "background": 0.25}
YELLOW_TRIANGLE_COLOUR_DROP = 0.7  # "a triangle" usually means a yellow one
SOURCES = (  # made-up sites; the first contributes ~40% of rows
    "shapeshop.example", "clipart-depot.example", "geo-stock.example", "kidslearn.example",
    "vectorhub.example", "artclass.example", "printables.example", "mathworks-shapes.example",
    "iconbarn.example", "pattern-lab.example",
)
SOURCE_WEIGHTS = np.array([40, 15, 10, 8, 7, 6, 5, 4, 3, 2], dtype=float) / 100.0

SYNONYMS = {"large": ("large", "big"), "small": ("small", "tiny"), "gray": ("gray", "grey")}
SYNONYM_SHARE = 0.25  # how often the second word is used


# What ``sample_scene`` may fix: each discrete attribute and its values (None: drawn at random).
SCENE_CONSTRAINTS = {
    "shape": [Options(SHAPES), None], "colour": [Options(COLOURS), None], "size": [Options(SIZES), None],
    "position": [Options(POSITIONS), None], "background": [Options(BACKGROUNDS), None],
}


@dataclass(frozen=True)
class Scene:
    """Every true attribute of one image, discrete and continuous."""

    shape: str
    colour: str
    size: str
    position: str
    background: str
    cx: float
    cy: float
    radius: float
    rotation: float
    shape_rgb: tuple[int, int, int]
    background_rgb: tuple[int, int, int]


def _jitter_rgb(rgb: tuple[int, int, int], amount: int, rng: np.random.Generator) -> tuple[int, int, int]:
    noisy = np.asarray(rgb) + rng.integers(-amount, amount + 1, size=3)
    return tuple(int(v) for v in np.clip(noisy, 0, 255))


def _valid_pair(colour: str, background: str) -> bool:
    """A shape must stand out from its background: no white on white, black on black."""
    return colour != background


def sample_scene(rng: np.random.Generator, **fixed: str) -> Scene:
    """Draw one scene; keyword arguments fix discrete attributes (e.g. ``shape="circle"``)."""
    for key in fixed:
        if key not in SCENE_CONSTRAINTS:
            raise invalid("attribute", key, "one of " + ", ".join(SCENE_CONSTRAINTS))
    validate_params(fixed, SCENE_CONSTRAINTS)
    shape = fixed.get("shape") or SHAPES[rng.integers(len(SHAPES))]
    while True:
        if "colour" in fixed:
            colour = fixed["colour"]
        elif shape == "triangle" and rng.random() < TRIANGLE_YELLOW_SHARE:
            colour = "yellow"
        else:
            others = [c for c in COLOURS if not (shape == "triangle" and c == "yellow")]
            colour = others[rng.integers(len(others))]
        background = fixed.get("background") or list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
        if _valid_pair(colour, background):
            break
        if "colour" in fixed and "background" in fixed:
            raise invalid("colour", colour, f"any colour but {colour} on a {background} background (it would be invisible)")
    size = fixed.get("size") or SIZES[rng.integers(len(SIZES))]
    position = fixed.get("position") or list(POSITIONS)[rng.integers(len(POSITIONS))]
    col, row = POSITIONS[position]
    cx = GRID_CENTRES[col] + rng.uniform(-POSITION_JITTER, POSITION_JITTER)
    cy = GRID_CENTRES[row] + rng.uniform(-POSITION_JITTER, POSITION_JITTER)
    radius = rng.uniform(*RADIUS[size])
    rotation = 0.0 if shape == "circle" else rng.uniform(-MAX_ROTATION, MAX_ROTATION)
    return Scene(
        shape=shape, colour=colour, size=size, position=position, background=background,
        cx=float(cx), cy=float(cy), radius=float(radius), rotation=float(rotation),
        shape_rgb=_jitter_rgb(COLOURS[colour], SHADE_JITTER, rng),
        background_rgb=_jitter_rgb(BACKGROUNDS[background], SHADE_JITTER // 2, rng),
    )


def shape_outline(shape: str, cx: float, cy: float, radius: float, rotation: float) -> list[tuple[float, float]]:
    """Polygon vertices of ``shape`` centred at (cx, cy) with half-extent ``radius``.

    Shared by the renderer and the attribute checker's templates, so both agree
    on what a "square of radius r" is. Circles come back as a 64-gon.
    """
    if shape == "circle":
        pts = [(math.cos(a), math.sin(a)) for a in np.linspace(0, 2 * math.pi, 64, endpoint=False)]
    elif shape == "square":
        h = 0.9
        pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif shape == "triangle":  # equilateral, pointing up, centroid at the centre
        big = 1.15
        pts = [(big * math.cos(a), big * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    elif shape == "cross":  # a plus sign with arms of width 0.72 r
        w = 0.36
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
    else:
        raise invalid("shape", shape, "one of " + ", ".join(SHAPES))
    theta = math.radians(rotation)
    c, s = math.cos(theta), math.sin(theta)
    return [(cx + radius * (x * c - y * s), cy + radius * (x * s + y * c)) for x, y in pts]


def render_mask(shape: str, cx: float, cy: float, radius: float, rotation: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of the shape on a ``size``x``size`` grid."""
    k = SUPERSAMPLE
    canvas = Image.new("L", (size * k, size * k), 0)
    outline = [(x * k, y * k) for x, y in shape_outline(shape, cx, cy, radius, rotation)]
    ImageDraw.Draw(canvas).polygon(outline, fill=255)
    small = canvas.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def render(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """The RGB image of ``scene``."""
    alpha = render_mask(scene.shape, scene.cx, scene.cy, scene.radius, scene.rotation, size)[..., None]
    fg = np.asarray(scene.shape_rgb, dtype=np.float32)
    bg = np.asarray(scene.background_rgb, dtype=np.float32)
    pixels = alpha * fg + (1.0 - alpha) * bg
    return Image.fromarray(np.round(pixels).astype(np.uint8), "RGB")


def _word(word: str, rng: np.random.Generator | None) -> str:
    options = SYNONYMS.get(word)
    if options is None or rng is None:
        return word
    return options[1] if rng.random() < SYNONYM_SHARE else options[0]


def position_phrase(position: str, rng: np.random.Generator | None = None) -> str:
    """``at the top left``, ``on the left``, ``in the center`` (or a synonym when ``rng`` is given)."""
    if position == "center":
        return "in the middle" if rng is not None and rng.random() < SYNONYM_SHARE else "in the center"
    if position in ("left", "right"):
        return f"on the {position}"
    if " " in position and rng is not None and rng.random() < SYNONYM_SHARE:
        return f"in the {position} corner"
    return f"at the {position}"


def describe(
    shape: str,
    colour: str | None = None,
    size: str | None = None,
    position: str | None = None,
    background: str | None = None,
    rng: np.random.Generator | None = None,
) -> str:
    """Caption for the given attributes; ``None`` leaves an attribute out.

    Without ``rng`` the canonical words are used (the evaluation prompts); with
    it, synonyms appear as in the training captions.
    """
    words = [w for w in (size and _word(size, rng), colour, shape) if w]
    article = "an" if words[0][0] in "aeiou" else "a"
    text = " ".join([article, *words])
    if position:
        text += " " + position_phrase(position, rng)
    if background:
        text += f" on a {_word(background, rng)} background"
    return text


def parse_caption(text: str) -> dict[str, str]:
    """The attributes a caption names (synonyms folded to canonical words); the inverse of :func:`describe`."""
    canonical = {alt: word for word, alts in SYNONYMS.items() for alt in alts}
    head, _, tail = f" {text.strip()} ".partition(" on a ")
    attrs: dict[str, str] = {}
    if tail.endswith(" background "):
        attrs["background"] = canonical.get(tail.removesuffix(" background ").strip(), tail.removesuffix(" background ").strip())
    words = [canonical.get(w, w) for w in head.split()]
    for key, values in (("shape", SHAPES), ("size", SIZES), ("colour", COLOURS)):
        found = [w for w in words if w in values]
        if found:
            attrs[key] = found[0]
    phrases = {position_phrase(p): p for p in POSITIONS}
    phrases |= {f"in the {p} corner": p for p in POSITIONS if " " in p} | {"in the middle": "center"}
    for phrase in sorted(phrases, key=len, reverse=True):
        if f" {phrase} " in head + " ":
            attrs["position"] = phrases[phrase]
            break
    return attrs


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A training caption for ``scene``, with attributes left out as alt-text does."""
    colour_drop = YELLOW_TRIANGLE_COLOUR_DROP if (scene.shape, scene.colour) == ("triangle", "yellow") else DROP["colour"]
    keep = {
        "size": rng.random() >= DROP["size"],
        "colour": rng.random() >= colour_drop,
        "position": rng.random() >= DROP["position"],
        "background": rng.random() >= DROP["background"],
    }
    return describe(
        scene.shape,
        colour=scene.colour if keep["colour"] else None,
        size=scene.size if keep["size"] else None,
        position=scene.position if keep["position"] else None,
        background=scene.background if keep["background"] else None,
        rng=rng,
    )


def make_dataset(n: int, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """``n`` images (uint8, N x 64 x 64 x 3) and their LAION-style metadata, one row each.

    Metadata columns: ``URL, TEXT, WIDTH, HEIGHT, source`` plus every true
    attribute, so the audit tools read it like LAION metadata and know the truth.
    """
    validate_params({"n": n, "seed": seed}, {"n": [POSITIVE_INT], "seed": [NON_NEGATIVE_INT]})
    check_budget("n", n, memory_bytes=2.0 * n * IMAGE_SIZE * IMAGE_SIZE * 3)  # the images, and as much again for captions and rows
    rng = np.random.default_rng(seed)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    rows = []
    for i in range(n):
        scene = sample_scene(rng)
        images[i] = np.asarray(render(scene))
        source = SOURCES[rng.choice(len(SOURCES), p=SOURCE_WEIGHTS)]
        attrs = asdict(scene)
        attrs.pop("shape_rgb"), attrs.pop("background_rgb")
        rows.append({
            "URL": f"https://cdn.{source}/img/{seed}-{i:07d}.png",
            "TEXT": caption(scene, rng),
            "WIDTH": IMAGE_SIZE,
            "HEIGHT": IMAGE_SIZE,
            "source": source,
            **attrs,
        })
    return images, pd.DataFrame(rows)


def evaluation_prompts(n: int = 320, seed: int = 1234) -> pd.DataFrame:
    """A fixed set of fully specified prompts with their attributes (one row each).

    Drawn uniformly over shapes/colours/sizes/positions/backgrounds (no triangle
    skew) so accuracy is not flattered by the training distribution.
    """
    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < n:
        attrs = {
            "shape": SHAPES[rng.integers(len(SHAPES))],
            "colour": list(COLOURS)[rng.integers(len(COLOURS))],
            "size": SIZES[rng.integers(len(SIZES))],
            "position": list(POSITIONS)[rng.integers(len(POSITIONS))],
            "background": list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))],
        }
        if not _valid_pair(attrs["colour"], attrs["background"]):
            continue
        rows.append({"prompt": describe(**attrs), "seed": int(rng.integers(2**31)), **attrs})
    return pd.DataFrame(rows)


def vocabulary() -> list[str]:
    """Every word a caption can contain (for the tokenizer)."""
    words = {"a", "an", "at", "the", "on", "in", "background", "corner", "middle", "center"}
    words |= set(SHAPES) | set(COLOURS) | set(BACKGROUNDS) | set(SIZES)
    for options in SYNONYMS.values():
        words |= set(options)
    for position in POSITIONS:
        words |= set(position.split())
    return sorted(words)
