"""Other tools' values in sdlab's terms: their sampler and schedule names as A1111's, their numbers checked.

ComfyUI and Fooocus (``euler_ancestral``, ``dpmpp_2m_sde_gpu``), InvokeAI (``euler_a``, ``dpmpp_2m_k``),
NovelAI and InvokeAI 1-2 (``k_euler_ancestral``, ``k_dpmpp_2``) name the same k-diffusion samplers
differently; a ``k_`` prefix, ComfyUI's ``_gpu`` (the same sampler, its noise drawn on the GPU) and a Karras
suffix (``_k``, ``_karras``, `` Karras``) come off before the name is looked up. A sampler or schedule sdlab
cannot run leaves ``spec.sampler`` empty, keeps the tool's words in ``extra`` (``Sampler``, ``Schedule type``)
and says why in ``extra["unmapped"]``: nothing read is dropped without a word.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import MetadataError, ValidationError
from .samplers import SAMPLERS, canonical_name
from .spec import GenerationSpec

_BASES = {
    "euler": "Euler", "euler_a": "Euler a", "euler_ancestral": "Euler a", "heun": "Heun", "lms": "LMS",
    "ddim": "DDIM", "plms": "PLMS", "pndm": "PLMS", "dpm_2": "DPM2", "kdpm_2": "DPM2", "dpm_2_a": "DPM2 a",
    "dpm_2_ancestral": "DPM2 a", "kdpm_2_a": "DPM2 a", "dpmpp_2m": "DPM++ 2M", "dpmpp_2": "DPM++ 2M",  # InvokeAI 2
    "dpmpp_2m_sde": "DPM++ 2M SDE", "dpmpp_sde": "DPM++ SDE", "uni_pc": "UniPC", "unipc": "UniPC", "lcm": "LCM",
}
_A1111 = {name.lower(): name for name in SAMPLERS if not name.endswith(" Karras")}

# Schedule words -> A1111's "Schedule type". ComfyUI's normal and simple and NovelAI's native are the
# model's own (uniform) spacing, which sdlab runs as the plain sampler; Karras is sdlab's " Karras".
SCHEDULES = {
    "normal": "Uniform", "simple": "Uniform", "native": "Uniform", "uniform": "Uniform", "automatic": "Uniform",
    "karras": "Karras", "exponential": "Exponential", "polyexponential": "Polyexponential",
    "sgm_uniform": "SGM Uniform", "ddim_uniform": "DDIM", "beta": "Beta", "kl_optimal": "KL Optimal",
    "align_your_steps": "Align Your Steps",
}
RUNNABLE = {"Uniform", "Karras"}


def a1111_sampler(name: Any, schedule: Any, unmapped: list[str], extra: dict) -> str | None:
    """sdlab's sampler for a tool's sampler ``name`` and ``schedule`` word (None: the plain schedule).

    Where sdlab has no such sampler, or not with that schedule, returns None, writes the names into ``extra``
    (``Sampler``, ``Schedule type``) and a note into ``unmapped``.
    """
    raw = str(name).strip()
    key, karras = raw.lower(), False
    if key.endswith(" karras"):
        key, karras = key[: -len(" karras")], True
    key = key.removeprefix("k_").removesuffix("_gpu")
    for suffix in ("_karras", "_k"):
        if key.endswith(suffix) and key[: -len(suffix)] in _BASES:
            key, karras = key[: -len(suffix)], True
    base = _BASES.get(key) or _A1111.get(key)
    words = str(schedule).strip() if schedule not in (None, "") else "Uniform"
    schedule_name = "Karras" if karras else SCHEDULES.get(words.lower(), words)
    if base is None:
        unmapped.append(f"sampler {raw!r} (sdlab has no such sampler)")
    elif schedule_name not in RUNNABLE:
        unmapped.append(f"schedule {words!r} for {base} (sdlab runs the uniform and Karras schedules only)")
    else:
        try:
            return canonical_name(base, "karras" if schedule_name == "Karras" else None)
        except ValidationError:
            unmapped.append(f"sampler {base} with the {schedule_name} schedule (sdlab has no such pair)")
    extra["Sampler"] = base or raw
    extra["Schedule type"] = schedule_name
    return None


def load_json(text: Any, where: str) -> dict:
    """A JSON object from ``text``, or a one-line :class:`MetadataError` naming ``where``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MetadataError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise MetadataError(f"{where}: not valid JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise MetadataError(f"{where}: expected a JSON object, found {type(data).__name__}")
    return data


def whole(value: Any, what: str, where: str) -> int:
    """An integer written as a number or a string of digits (seeds may be 64-bit: no float round trip)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+(\.0*)?\s*", value):
        return int(value.strip().split(".")[0])
    raise MetadataError(f"{where}: {what} {value!r} is not a whole number")


def real(value: Any, what: str, where: str) -> float:
    """A finite number written as a number or a string."""
    number = None
    if not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError):
            pass
    if number is None:
        raise MetadataError(f"{where}: {what} {value!r} is not a number")
    if not math.isfinite(number):
        raise MetadataError(f"{where}: {what} {value!r} is not a finite number")
    return number


def numbers(data: dict, where: str, **keys: str) -> dict:
    """Spec fields read from ``data`` under the tool's own key names, e.g. ``guidance="cfg_scale"``:
    ``guidance`` as a number, the others (seed, steps, width, height) whole; an absent key is left out."""
    return {field: (real if field == "guidance" else whole)(data[key], key, where) for field, key in keys.items()
            if data.get(key) is not None}


def model_stem(name: Any) -> str:
    """A checkpoint file name as A1111 writes ``Model``: no folders, no extension."""
    stem = re.split(r"[\\/]", str(name).strip())[-1]
    return re.sub(r"\.(safetensors|ckpt|pt|pth|bin|gguf|sft)$", "", stem, flags=re.I)


def build_spec(tool: str, fields: dict, extra: dict, unmapped: list[str]) -> GenerationSpec:
    """The spec a tool's file describes: ``extra["source"]`` names the tool, ``extra["unmapped"]`` what was not read."""
    extra = {"source": tool, **{k: str(v) for k, v in extra.items()}}
    if unmapped:
        extra["unmapped"] = "; ".join(dict.fromkeys(unmapped))
    fields = {k: v for k, v in fields.items() if v is not None}
    try:
        return GenerationSpec(**fields, extra=extra)
    except ValidationError as exc:
        raise MetadataError(f"{tool}: {exc}") from None
