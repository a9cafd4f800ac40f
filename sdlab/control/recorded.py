"""Reproducing a controlled image: its ControlNet units' images and models found again, checked before anything loads.

A PNG's ``ControlNet N`` text names each unit's model (``name [hash]``) but holds no image, only
sdlab's ``Control N image hash``. The caller passes the images again, one per unit in order
(``sdlab reproduce --control IMG``), and they must be the recorded ones; a model can be named
again (``--control-model``) when the recorded name is not one sdlab can find. After the pipeline
is loaded, each ControlNet is loaded and its A1111 hash compared with the recorded one (unless the
recorded hash is the one every file under 1 MiB gets, which tells nothing).
"""
from __future__ import annotations

import hashlib
import re

from ..images import load_rgb
from ..validation import invalid
from .infotext import UNIT_KEY, image_hash_key


def _pixels_hash(image) -> str:
    return hashlib.md5(load_rgb(image).tobytes()).hexdigest()


def attach_controls(spec, control=None, control_models=None, control_dir=None, allow_pickle: bool = False):
    """``spec`` with each unit's image (and, where given, model) attached; refuses in one line what is missing or wrong.

    ``control_dir`` is a folder of ControlNet files (A1111's ``models/ControlNet``): a recorded ``name [hash]``
    is looked up there as A1111 looks it up (:func:`.nets.find_in_folder`). Every model name is then
    checked to exist (:func:`.nets.resolve`), so a missing ControlNet is one line before the pipeline loads.
    ``allow_pickle`` consents to ``.pth``/``.ckpt`` ControlNet files."""
    control, control_models = list(control or []), list(control_models or [])
    unknown = [k for k in spec.extra if UNIT_KEY.match(k)]
    if unknown:
        text = spec.extra[unknown[0]]
        module = re.search(r"Module: ([^,]*)", text)
        raise invalid("control", f"{unknown[0]} with module {module.group(1) if module else '?'}",
                      "units sdlab can run: modules canny, outline, mask or none, any Control Mode "
                      "(pass an A1111 detected map as the image to run it with module none)")
    units = spec.control
    if not units:
        if control:
            raise invalid("control", f"{len(control)} image(s)", "none: this PNG records no ControlNet")
        return spec
    if len(control) != len(units):
        raise invalid("control", f"{len(control)} image(s)", f"{len(units)} image(s), one per recorded ControlNet unit, in order")
    if control_models and len(control_models) != len(units):
        raise invalid("control model", f"{len(control_models)} model(s)", f"none or {len(units)}, one per unit")
    attached = []
    for i, (unit, image) in enumerate(zip(units, control)):
        recorded = spec.extra.get(image_hash_key(i))
        if recorded is not None and _pixels_hash(image) != recorded.strip().lower():
            raise invalid(f"control image of unit {i}", str(image), f"the image with hash {recorded} (this one has {_pixels_hash(image)})")
        changes = {"image": image, "allow_pickle": bool(allow_pickle)}
        if control_models:
            changes.update(model=control_models[i], model_hash=None)
        model = changes.get("model", unit.model)
        if isinstance(model, str):
            changes["model"] = locate_model(model, control_dir, None if control_models else unit.model_hash, allow_pickle)
        attached.append(unit.replace(**changes))
    return spec.replace(control=tuple(attached))


def locate_model(model: str, control_dir=None, model_hash: str | None = None, allow_pickle: bool = False) -> str:
    """``model`` as sdlab will load it: a file of ``control_dir`` with that name (or ``model_hash``) when there is one,
    else the name itself; checked to exist either way (one line, nothing loaded)."""
    from .nets import find_in_folder, resolve

    found = find_in_folder(control_dir, model, model_hash) if control_dir is not None else None
    model = str(found) if found is not None else model
    resolve(model, allow_pickle=allow_pickle)
    return model


def load_recorded_controlnets(spec, pipe):
    """``spec`` with each unit's model loaded on the pipeline's device, its hash checked against the recorded one."""
    from .nets import EMPTY_HASH, load_controlnet, name_and_hash

    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    loaded = []
    for i, unit in enumerate(spec.control):
        if not isinstance(unit.model, str):
            loaded.append(unit)
            continue
        net = load_controlnet(unit.model, device=denoiser.device, dtype=denoiser.dtype, unet=getattr(pipe, "unet", None), allow_pickle=unit.allow_pickle)
        found = name_and_hash(net)[1]
        if unit.model_hash and unit.model_hash.lower() not in (found.lower(), EMPTY_HASH) and found != EMPTY_HASH:
            raise invalid(f"control model of unit {i}", unit.model, f"the ControlNet with hash {unit.model_hash} (this one has {found})")
        loaded.append(unit.replace(model=net))
    return spec.replace(control=tuple(loaded))
