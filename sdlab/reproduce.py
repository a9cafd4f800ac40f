"""Regenerate an image from its own metadata: the inputs checked before any model is loaded, then the pixel difference.

A PNG's text carries its spec (:mod:`sdlab.metadata`) but not its init image
or mask, only their hashes: the caller hands the images again and they must be
the ones recorded. A PNG whose size is not the size its text asks for (an
upscaled or edited image) is refused before anything is generated.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .errors import ModelNotFoundError, ValidationError
from .validation import invalid
from .images import load_rgb, open_image
from .metadata import INIT_HASH, MASK_HASH, image_hash, read_parameters, same_image
from .spec import GenerationSpec


@dataclass
class Reproduction:
    """The regenerated image's result and how far its pixels are from the original's (0: identical)."""

    result: Any  # sdlab.generate.Result
    max_abs_difference: int


def prepare_reproduction(png, init=None, mask=None, adapters=None, control=None, control_models=None, control_dir=None,
                         allow_pickle: bool = False) -> tuple[GenerationSpec, np.ndarray]:
    """The spec to regenerate ``png`` with (its init image and mask attached, its recorded LoRAs and embeddings
    found in ``adapters``' folders by hash, its ControlNet units' images ``control`` attached and checked, their
    models renamed by ``control_models`` where given or found in the folder ``control_dir``) and the original
    pixels; checks only."""
    from .adapters.recorded import resolve_recorded
    from .control.recorded import attach_controls

    spec = resolve_recorded(read_parameters(png), adapters)
    for key, given, name in ((INIT_HASH, init, "init"), (MASK_HASH, mask, "mask")):
        if key in spec.extra:
            if given is None:
                raise ValidationError(f"{name}: this PNG was made from an image with hash {spec.extra[key]}; pass that image")
            if isinstance(given, (str, os.PathLike)):
                open_image(given, name).close()  # a missing or unreadable file is named as the option it came from
            if not same_image(given, spec.extra[key]):
                raise ValidationError(f"{name}: {given} has hash {image_hash(given)}, but the PNG was made from {spec.extra[key]}")
    spec = attach_controls(spec.replace(init_image=init, mask=mask), control, control_models, control_dir, allow_pickle)
    original = load_rgb(png)
    if spec.mode == "txt2img" and spec.width and (spec.width, spec.height) != (original.shape[1], original.shape[0]):
        raise ValidationError(f"png: the image is {original.shape[1]}x{original.shape[0]} but its metadata asks for "
                              f"{spec.width}x{spec.height} (an upscaled or edited image); nothing was generated")
    return spec, original


def reproduce(load: Callable[[GenerationSpec], Any], png, init=None, mask=None, adapters=None,
              control=None, control_models=None, model: str | None = None, device: str = "auto",
              force: bool = False, control_dir=None, allow_pickle: bool = False) -> Reproduction:
    """Check ``png``'s inputs, then ``load(spec)`` the model and regenerate it (``adapters``:
    :class:`sdlab.adapters.networks.AdapterFolders` holding the LoRAs and embeddings it records; ``control``:
    one image per recorded ControlNet unit; ``control_models``: names, directories or files replacing the recorded
    ones; ``control_dir``: A1111's ControlNet folder, where recorded names are looked up; ``allow_pickle``: consent
    to ``.pth`` ControlNet files).

    Before ``load``, the model ``load`` will use (``model``, else the one the PNG names; a PNG naming none
    needs ``model``) is located and the regeneration's memory and time on ``device`` estimated (:func:`sdlab.cost.check_spec`;
    a name only ``load`` knows is estimated as SD 1.x): a foreign file asking for more than this machine has is
    refused in one line unless ``force``."""
    from .control.recorded import load_recorded_controlnets
    from .cost import check_spec
    from .generate import generate
    from .models import SHAPES_WORLD

    spec, original = prepare_reproduction(png, init, mask, adapters, control, control_models, control_dir, allow_pickle)
    if model is None and spec.model is None:  # never a silent fall back to some model: the pixels would mean nothing
        raise invalid("model", None, "a model to regenerate with: the PNG names none, so pass model= (CLI: --model)")
    try:
        check_spec(model or spec.model or SHAPES_WORLD, spec, device, force)
    except ModelNotFoundError:
        if model is not None:
            raise
        check_spec(None, spec, device, force)  # a name only ``load`` knows: estimated as SD 1.x
    pipe = load(spec)
    spec = load_recorded_controlnets(spec, pipe)
    result = generate(pipe, spec, adapters=adapters)
    again = np.asarray(result.images[0].convert("RGB"), dtype=np.int16)
    if original.shape != again.shape:
        raise ValidationError(f"png: the regenerated image is {again.shape[1]}x{again.shape[0]}, "
                              f"the original {original.shape[1]}x{original.shape[0]}")
    return Reproduction(result, int(np.abs(original.astype(np.int16) - again).max()))
