"""``GenerationSpec``: the one value that describes an image.

Fields left ``None`` (steps, guidance, sampler, size) take the model's
recommended defaults when generating; every :class:`~sdlab.generate.Result`
carries fully resolved specs, one per image, each with its own seed, so a
saved image can be regenerated from its spec alone.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import ValidationError
from .control.unit import ControlUnit, as_units
from .validation import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT, UNIT, Check, Interval, invalid, validate_fields, validate_params

MAX_SEED = 2**64 - 1
SIZE_FACTOR = 8  # every SD VAE downsamples by 8; models may require more (checked at generate time)


def nearest_sizes(value: int, factor: int) -> tuple[int, int]:
    """The valid sizes just below and above ``value`` for multiples of ``factor``."""
    below = max(factor, (value // factor) * factor)
    return below, below + factor


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` -> (width, height)."""
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise invalid("size", text, "WIDTHxHEIGHT, e.g. 64x64")
    return int(parts[0]), int(parts[1])


def check_size(name: str, value: int, factor: int) -> None:
    """Refuse a width/height that is not a positive multiple of ``factor``, naming the nearest valid ones."""
    validate_params({name: value}, {name: [POSITIVE_INT]})
    if value % factor:
        lo, hi = nearest_sizes(value, factor)
        raise invalid(name, value, f"a multiple of {factor}; nearest: {lo} or {hi}")


@dataclass(frozen=True)
class GenerationSpec:
    """Everything a researcher varies when making an image (A1111's parameters plus sdlab's)."""

    prompt: str
    negative_prompt: str = ""
    seed: int = -1  # -1: a random seed, resolved (and recorded) at generation
    steps: int | None = None
    guidance: float | None = None  # CFG scale
    sampler: str | None = None  # A1111 name, e.g. "Euler a", "DPM++ 2M Karras"
    width: int | None = None
    height: int | None = None
    batch_size: int = 1
    clip_skip: int = 1
    init_image: Any = None  # img2img / inpainting source: a path, PIL image or array
    strength: float = 0.75  # img2img denoising strength
    mask: Any = None  # inpainting mask (white = repaint): a path, PIL image or array
    mask_blur: int = 4
    outpaint: tuple[int, int, int, int] | None = None  # margins left, top, right, bottom in pixels
    model: str | None = None
    model_hash: str | None = None
    control: tuple = ()  # ControlNet units (sdlab.control.unit.ControlUnit): image, type, model, scale, start/end
    guess_mode: bool = False  # ControlNets on the conditional half only (A1111: "ControlNet is more important")
    extra: dict = field(default_factory=dict, compare=False)  # keys read from metadata that sdlab has no field for

    _parameter_constraints = {
        "prompt": [str], "negative_prompt": [str],
        "seed": [Check(Interval(int, -1, MAX_SEED).accepts, "-1 (random) or a whole number in [0, 2**64)")],  # 64 bits, as ComfyUI's
        "steps": [POSITIVE_INT, None], "guidance": [NON_NEGATIVE, None],
        "width": [POSITIVE_INT, None], "height": [POSITIVE_INT, None],
        "batch_size": [POSITIVE_INT], "clip_skip": [POSITIVE_INT], "strength": [UNIT], "mask_blur": [NON_NEGATIVE_INT],
        "control": [Check(lambda c: all(isinstance(u, ControlUnit) for u in c), "a ControlUnit or a list of them")],
        "guess_mode": [bool],
        "outpaint": [None, Check(lambda m: len(tuple(m)) == 4 and all(isinstance(x, int) and x >= 0 for x in m) and any(m),
                                 "four margins left, top, right, bottom in pixels (>= 0, not all 0)")],
    }

    def __post_init__(self) -> None:
        object.__setattr__(self, "control", as_units(self.control))
        validate_fields(self)
        if self.sampler is not None:
            from .samplers import canonical_name

            object.__setattr__(self, "sampler", canonical_name(self.sampler))
        for name in ("width", "height"):
            if getattr(self, name) is not None:
                check_size(name, getattr(self, name), SIZE_FACTOR)
        if self.mask is not None and self.init_image is None and self.outpaint is None:
            raise ValidationError("mask: a mask without an init_image is not valid; valid: a mask with an init_image to paint into")
        if self.outpaint is not None:
            if self.init_image is None:
                raise invalid("outpaint", self.outpaint, "margins only with an init_image to extend")
            object.__setattr__(self, "outpaint", tuple(self.outpaint))

    # -- conveniences ----------------------------------------------------------------
    @property
    def mode(self) -> str:
        """``txt2img``, ``img2img``, ``inpaint`` or ``outpaint``."""
        if self.outpaint is not None:
            return "outpaint"
        if self.mask is not None:
            return "inpaint"
        return "img2img" if self.init_image is not None else "txt2img"

    def replace(self, **changes: Any) -> "GenerationSpec":
        """A copy with ``changes`` applied (validated again)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValidationError(f"unknown spec field(s): {', '.join(sorted(unknown))}; valid: {', '.join(f.name for f in fields(self))}")
        return replace(self, **changes)

    def with_seed(self) -> "GenerationSpec":
        """This spec with a concrete seed (a random one drawn if ``seed == -1``)."""
        return self if self.seed >= 0 else self.replace(seed=random.randrange(2**32))  # as A1111 draws them

    def resolved(self, defaults: dict) -> "GenerationSpec":
        """Fill ``None`` fields from a model's defaults (``steps``, ``guidance``, ``sampler``, ``width``, ``height``)."""
        changes = {k: defaults[k] for k in ("steps", "guidance", "sampler", "width", "height") if getattr(self, k) is None and k in defaults}
        return self.replace(**changes) if changes else self


def check_inputs(spec: GenerationSpec, factor: int | None = None) -> None:
    """Open a spec's init image and mask given as paths (one line if either is missing or not an image) and check
    the mask is the init image's size, before any model is loaded. Given the model's size ``factor``
    (``models.config_size_factor``), also make generate's size checks: the spec's width/height and the
    (extended) init image's."""
    from .images import open_image

    if factor is not None:
        for name in ("width", "height"):
            if getattr(spec, name) is not None:
                check_size(name, getattr(spec, name), factor)
    sizes = {}
    for name, value in (("init", spec.init_image), ("mask", spec.mask)):
        if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
            with open_image(value, name) as image:
                sizes[name] = image.size
        elif value is not None:
            sizes[name] = tuple(value.size) if not hasattr(value, "shape") else (int(value.shape[1]), int(value.shape[0]))
    if "mask" in sizes and "init" in sizes and spec.outpaint is None and sizes["mask"] != sizes["init"]:
        raise invalid("mask", f"{sizes['mask'][0]}x{sizes['mask'][1]}", f"the init image's size, {sizes['init'][0]}x{sizes['init'][1]}")
    if factor is not None and "init" in sizes:
        left, top, right, bottom = spec.outpaint or (0, 0, 0, 0)
        for name, value in (("width", sizes["init"][0] + left + right), ("height", sizes["init"][1] + top + bottom)):
            check_size(f"{name} of the {'extended ' if spec.outpaint else ''}init image", value, factor)
