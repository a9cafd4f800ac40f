"""``ControlUnit``: one ControlNet's part of a :class:`~sdlab.spec.GenerationSpec` (A1111's "ControlNet N" unit).

A spec holds any number of units (``spec.control``); each names its image, the
kind of map drawn from it, the ControlNet that reads the map and how strongly
and when it acts. Fields mirror A1111's ControlNet extension (its infotext
names in brackets) and diffusers' arguments (in the comments):

- ``scale`` [Weight]: ``controlnet_conditioning_scale``, the residuals' multiplier (0: no effect);
- ``start``/``end`` [Guidance Start/End]: ``control_guidance_start/end``, the fraction of the
  steps during which the ControlNet acts;
- ``preprocessed`` [Module: none]: the image is already a map and is passed as is.

A1111's Control Mode: the spec's ``guess_mode`` ("ControlNet is more important") is one switch for
all units, as in diffusers; a unit's ``prompt_more_important`` ("My prompt is more important") fades
its residuals from the middle block's 1 to a tenth at the first (diffusers' guess-mode ramp) on both
halves of CFG. The spec imports this module, so it never imports the spec.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from ..validation import Check, Interval, Options, invalid, validate_fields
from .preprocess import CANNY_HIGH, CANNY_LOW, CONTROL_TYPES, check_module

RESIZE_MODES = ("Crop and Resize", "Just Resize", "Resize and Fill")  # A1111's names; the first is its default


def _is_model(value: Any) -> bool:
    return hasattr(value, "config") and callable(value)


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet: image, map kind, model, weight and step window."""

    image: Any  # the ordinary image (path, PIL image or array), or the ready map when ``preprocessed``;
    #             None in a spec read from metadata (the text holds its hash only: reproduce takes it again)
    control_type: str = "edges"  # edges, mask or depth: which preprocessor draws the map
    model: Any = None  # a registered ControlNet name, a diffusers directory, a single file (A1111's), or a loaded ControlNetModel;
    #                   None only for depth2img models (sd2-depth), whose UNet takes the depth map itself
    scale: float = 1.0  # A1111's Weight, diffusers' controlnet_conditioning_scale
    start: float = 0.0  # fraction of the steps before which the ControlNet is off
    end: float = 1.0  # fraction of the steps after which it is off again
    preprocessed: bool = False  # the image is the map already (A1111's Module: none)
    module: str | None = None  # the preprocessor (canny, outline, mask, none); None: the type's default
    low: float = CANNY_LOW  # Canny's thresholds on 0-255 pixels (A1111's Threshold A/B)
    high: float = CANNY_HIGH
    resize_mode: str = "Crop and Resize"  # how a map of another shape is fitted to the image size
    model_hash: str | None = None  # filled at generation (A1111's "name [hash]")
    processor_res: int = -1  # filled at generation: the resolution Canny ran at (A1111's Processor Res; -1: none)
    allow_pickle: bool = False  # the model may be a pickle file (.pth, .ckpt): consent to unpickle it, as for checkpoints
    prompt_more_important: bool = False  # A1111's Control Mode "My prompt is more important": residuals ramped 0.1 -> 1, both CFG halves

    _parameter_constraints = {
        "control_type": [Options(CONTROL_TYPES)],
        "model": [None, str, Check(_is_model, "a registered ControlNet name, a directory, a ControlNet file or a loaded ControlNetModel")],
        "scale": [Interval(float, 0, 2)],  # A1111's slider range
        "start": [Interval(float, 0, 1)], "end": [Interval(float, 0, 1)],
        "preprocessed": [bool], "module": [None, str], "low": [Interval(float, 0, 255)], "high": [Interval(float, 0, 2040)],
        "resize_mode": [Options(RESIZE_MODES)], "model_hash": [None, str],
        "processor_res": [Interval(int, -1, None)], "allow_pickle": [bool],
        "prompt_more_important": [bool],
    }

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.end <= self.start:
            raise invalid("control end", self.end, f"a fraction of the steps > control start ({self.start:g})")
        object.__setattr__(self, "module", "none" if self.preprocessed else check_module(self.control_type, self.module))

    def replace(self, **changes: Any) -> "ControlUnit":
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise invalid("control unit field", sorted(unknown)[0], ", ".join(f.name for f in fields(self)))
        return replace(self, **changes)

    @property
    def model_name(self) -> str | None:
        """The model as text: its name, or a loaded model's registered name."""
        if self.model is None or isinstance(self.model, str):
            return self.model
        from ..models import model_info

        return model_info(self.model).name


def as_units(control: Any) -> tuple:
    """A spec's ``control`` as a tuple of units (one unit, a list or a tuple accepted)."""
    if control is None:
        return ()
    if isinstance(control, ControlUnit):
        return (control,)
    if isinstance(control, (list, tuple)) and all(isinstance(u, ControlUnit) for u in control):
        return tuple(control)
    raise invalid("control", control, "a ControlUnit or a list of them")
