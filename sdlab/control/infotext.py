"""A1111's ControlNet extension's infotext: ``ControlNet N: "Module: ..., Model: name [hash], ..."`` written and read.

The extension (Mikubill/sd-webui-controlnet, ``ControlNetUnit.serialize``) writes one key per
enabled unit, ``ControlNet 0``, ``ControlNet 1``..., whose value lists the unit's infotext fields as
``Display Name: value`` joined by ``, `` (field names capitalised word by word, values as
Python's ``str``: ``1.0``, ``False``, enums by their value), and A1111 JSON-quotes the whole
value because it holds commas and colons. The fields, in order: Module, Model, Weight,
Resize Mode, Processor Res, Threshold A, Threshold B, Guidance Start, Guidance End, Pixel
Perfect, Control Mode. Reading splits on ``,`` and then ``: `` as its ``parse_unit`` does.

sdlab's own preprocessors keep their names (``canny`` and ``none`` are the extension's too;
``outline`` and ``mask`` are sdlab's). The extension keeps no image in the text; sdlab adds
``Control N image hash`` (MD5 of the image's pixels, as A1111's init image hash) beside it, under a
name that does not start with ``ControlNet`` (the extension parses every such key as a unit).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..images import load_rgb
from .unit import ControlUnit

UNIT_KEY = re.compile(r"^ControlNet (\d+)$")
BALANCED, CONTROL_MORE, PROMPT_MORE = "Balanced", "ControlNet is more important", "My prompt is more important"  # A1111's Control Modes
CONTROL_MODES = (BALANCED, PROMPT_MORE, CONTROL_MORE)  # in the extension's order
MODULE_TYPES = {"canny": "edges", "outline": "edges", "mask": "mask"}  # the kind each sdlab preprocessor draws


def image_hash_key(index: int) -> str:
    return f"Control {index} image hash"


def _model_text(unit: ControlUnit) -> str:
    name = unit.model_name
    if name is None:
        return "None"
    if ("/" in name or "\\" in name) and Path(name).exists():  # a directory's name; a file's stem, as A1111 names its files
        name = Path(name).stem if Path(name).is_file() else Path(name).name
    return f"{name} [{unit.model_hash}]" if unit.model_hash else name


def unit_text(unit: ControlUnit, guess_mode: bool) -> str:
    """One unit as the extension serialises it (without A1111's outer quotes)."""
    canny = unit.module == "canny"
    fields = [
        ("Module", unit.module), ("Model", _model_text(unit)), ("Weight", str(float(unit.scale))),
        ("Resize Mode", unit.resize_mode), ("Processor Res", str(unit.processor_res)),
        ("Threshold A", str(float(unit.low)) if canny else "-1"), ("Threshold B", str(float(unit.high)) if canny else "-1"),
        ("Guidance Start", str(float(unit.start))), ("Guidance End", str(float(unit.end))),
        ("Pixel Perfect", "False"),
        ("Control Mode", CONTROL_MORE if guess_mode else PROMPT_MORE if unit.prompt_more_important else BALANCED),
    ]
    return ", ".join(f"{k}: {v}" for k, v in fields)


def control_pairs(spec) -> list[tuple[str, str]]:
    """The infotext pairs of a spec's units: ``ControlNet N`` and sdlab's ``Control N image hash``."""
    pairs = []
    for i, unit in enumerate(spec.control):
        pairs.append((f"ControlNet {i}", unit_text(unit, spec.guess_mode)))
        if unit.image is not None:
            pairs.append((image_hash_key(i), hashlib.md5(load_rgb(unit.image).tobytes()).hexdigest()))
    return pairs


def parse_unit(text: str) -> dict[str, str]:
    """The extension's ``parse_unit``: ``Key: value`` items split on commas (values kept as text)."""
    fields = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition(": ")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _number(fields: dict, key: str, default: float) -> float:
    try:
        return float(fields.get(key, default))
    except ValueError:
        from ..errors import MetadataError

        raise MetadataError(f"parameters: ControlNet {key} {fields[key]!r} is not a number") from None


def _unit_from(fields: dict) -> ControlUnit | None:
    """A unit sdlab can run from the extension's fields, or None (a preprocessor or mode sdlab lacks)."""
    from .nets import CONTROLNETS

    module = fields.get("Module", "none")
    if module not in ("none", *MODULE_TYPES) or fields.get("Control Mode", BALANCED) not in (BALANCED, CONTROL_MORE, PROMPT_MORE):
        return None
    match = re.match(r"^(.*?)\s*\[([0-9a-fA-F]+)\]$", fields.get("Model", "None"))
    name, model_hash = (match.group(1), match.group(2)) if match else (fields.get("Model", "None"), None)
    if name == "None":
        name = None
    known = CONTROLNETS.get(name or "") or next((r for r in CONTROLNETS.values() if r.source.split("/")[-1] == name), None)
    guessed = "depth" if "depth" in (name or "").lower() else "edges"  # as the extension filters models by type name
    control_type = MODULE_TYPES.get(module) or (known.control_type if known else guessed)
    canny = module == "canny"
    return ControlUnit(
        image=None, control_type=control_type, model=name, model_hash=model_hash, preprocessed=module == "none",
        module=None if module == "none" else module, scale=_number(fields, "Weight", 1.0),
        start=_number(fields, "Guidance Start", 0.0), end=_number(fields, "Guidance End", 1.0),
        low=_number(fields, "Threshold A", 100) if canny else 100, high=_number(fields, "Threshold B", 200) if canny else 200,
        resize_mode=fields.get("Resize Mode", "Crop and Resize"), processor_res=int(_number(fields, "Processor Res", -1)),
        prompt_more_important=fields.get("Control Mode") == PROMPT_MORE,
    )


def control_from_pairs(pairs: dict[str, str]) -> tuple[tuple, bool, set]:
    """(units, guess mode, keys consumed) from an infotext's pairs; units sdlab cannot run stay as text."""
    found = sorted((int(m.group(1)), key) for key in pairs if (m := UNIT_KEY.match(key)))
    units, consumed, guess = [], set(), False
    for _, key in found:
        fields = parse_unit(pairs[key])
        unit = _unit_from(fields)
        if unit is None:  # one unit sdlab cannot run: all stay as text (reproduce refuses them in one line)
            return (), False, set()
        units.append(unit)
        consumed.add(key)
        guess = guess or fields.get("Control Mode") == CONTROL_MORE
    return tuple(units), guess, consumed
