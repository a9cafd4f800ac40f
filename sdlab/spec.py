"""``GenerationSpec``: the one value that describes an image.

Fields left ``None`` (steps, guidance, sampler, size) take the model's
recommended defaults when generating; every :class:`~sdlab.generate.Result`
carries fully resolved specs, one per image, each with its own seed, so a
saved image can be regenerated from its spec alone.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import ValidationError

SIZE_FACTOR = 8  # every SD VAE downsamples by 8; models may require more (checked at generate time)


def nearest_sizes(value: int, factor: int) -> tuple[int, int]:
    """The valid sizes just below and above ``value`` for multiples of ``factor``."""
    below = max(factor, (value // factor) * factor)
    return below, below + factor


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` -> (width, height)."""
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValidationError(f"size: {text!r} must be WIDTHxHEIGHT, e.g. 64x64")
    return int(parts[0]), int(parts[1])


def check_size(name: str, value: int, factor: int) -> None:
    """Refuse a width/height that is not a positive multiple of ``factor``, naming the nearest valid ones."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValidationError(f"{name}: {value!r} must be a positive whole number of pixels")
    if value % factor:
        lo, hi = nearest_sizes(value, factor)
        raise ValidationError(f"{name}: {value} is not a multiple of {factor}; nearest valid: {lo} or {hi}")


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
    extra: dict = field(default_factory=dict, compare=False)  # keys read from metadata that sdlab has no field for

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise ValidationError(f"prompt: expected text, got {type(self.prompt).__name__}")
        if not isinstance(self.negative_prompt, str):
            raise ValidationError(f"negative_prompt: expected text, got {type(self.negative_prompt).__name__}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not (-1 <= self.seed < 2**32):
            raise ValidationError(f"seed: {self.seed!r} must be a whole number in [0, 2**32) or -1 for random")
        if self.steps is not None and (not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1):
            raise ValidationError(f"steps: {self.steps!r} must be a whole number >= 1")
        if self.guidance is not None and (not isinstance(self.guidance, (int, float)) or not math.isfinite(self.guidance) or self.guidance < 0):
            raise ValidationError(f"guidance: {self.guidance!r} must be a number >= 0 (1 = no guidance; SD uses ~7)")
        if self.sampler is not None:
            from .samplers import canonical_name

            object.__setattr__(self, "sampler", canonical_name(self.sampler))
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None:
                check_size(name, value, SIZE_FACTOR)
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValidationError(f"batch_size: {self.batch_size!r} must be a whole number >= 1")
        if not isinstance(self.clip_skip, int) or self.clip_skip < 1:
            raise ValidationError(f"clip_skip: {self.clip_skip!r} must be a whole number >= 1 (1 = use the last layer)")
        if not isinstance(self.strength, (int, float)) or not (0.0 <= self.strength <= 1.0):
            raise ValidationError(f"strength: {self.strength!r} must be in [0, 1]")
        if not isinstance(self.mask_blur, int) or self.mask_blur < 0:
            raise ValidationError(f"mask_blur: {self.mask_blur!r} must be a whole number of pixels >= 0")
        if self.mask is not None and self.init_image is None and self.outpaint is None:
            raise ValidationError("mask: inpainting needs an init_image to paint into")
        if self.outpaint is not None:
            margins = tuple(self.outpaint)
            if len(margins) != 4 or any(not isinstance(m, int) or m < 0 for m in margins) or not any(margins):
                raise ValidationError(f"outpaint: {self.outpaint!r} must be four margins left, top, right, bottom in pixels (>= 0, not all 0)")
            if self.init_image is None:
                raise ValidationError("outpaint: needs an init_image to extend")
            object.__setattr__(self, "outpaint", margins)

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
        return self if self.seed >= 0 else self.replace(seed=random.randrange(2**32))

    def resolved(self, defaults: dict) -> "GenerationSpec":
        """Fill ``None`` fields from a model's defaults (``steps``, ``guidance``, ``sampler``, ``width``, ``height``)."""
        changes = {k: defaults[k] for k in ("steps", "guidance", "sampler", "width", "height") if getattr(self, k) is None and k in defaults}
        return self.replace(**changes) if changes else self
