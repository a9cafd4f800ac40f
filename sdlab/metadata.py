"""PNG metadata: AUTOMATIC1111's ``parameters`` text chunk, written and read.

Format (REFERENCE.md): the prompt (may span lines), an optional
``Negative prompt: ...`` line, and a last line of ``Key: value`` pairs joined
by ``, `` (values with commas, colons or newlines JSON-quoted). Reading uses
A1111's own regex and rule (a last line with fewer than 3 pairs is prompt).
Keys sdlab has no field for are kept in ``spec.extra`` and written back.
Other tools' files (ComfyUI, InvokeAI, NovelAI, Fooocus, A1111's EXIF and
stealth text) are found and read by :mod:`sdlab.foreign`.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from .errors import MetadataError, ValidationError
from .io import atomic_path, unique_path
from .spec import GenerationSpec

_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")
NEGATIVE = "Negative prompt:"

# Keys sdlab writes beyond A1111's own (A1111 keeps unknown keys too).
INIT_HASH, MASK_HASH, OUTPAINT, BATCH = "Init image hash", "Mask hash", "Outpaint margins", "Batch size"


def _quote(value: str) -> str:
    """A1111's quoting: JSON-quote values that contain a comma, colon, newline or quote."""
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ',:\n"') else value


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value[1:-1]
    return value


def _number(value: float) -> str:
    """As A1111 writes numbers: 7, 7.5 (a slider's 5.000000000000001 is 5)."""
    value = round(float(value), 6)
    return str(int(value)) if value.is_integer() else repr(value)


def image_hash(image: Any) -> str:
    """A1111's init image hash: MD5 of the image's RGB pixel bytes (32 hex digits)."""
    from .images import load_rgb

    return hashlib.md5(load_rgb(image).tobytes()).hexdigest()


def legacy_image_hash(image: Any) -> str:
    """The hash sdlab wrote before it followed A1111 (10 hex digits of SHA-256 of pixels and shape), still accepted."""
    from .images import load_rgb

    pixels = load_rgb(image)
    return hashlib.sha256(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()[:10]


def same_image(image: Any, recorded: str) -> bool:
    """Whether ``image`` is the one whose hash a PNG recorded (A1111's MD5, or sdlab's earlier short SHA-256)."""
    return recorded.strip().lower() in (image_hash(image), legacy_image_hash(image))


# A1111 >= 1.9: "Schedule type" beside the sampler. A bare sampler name reads as "Automatic", which means Karras for
# these samplers and Exponential for DPM++ 2M SDE; sdlab writes the schedule explicitly so A1111 runs what sdlab ran.
AUTOMATIC_SCHEDULE = {"DPM++ 2M": "Karras", "DPM2": "Karras", "DPM2 a": "Karras", "DPM++ SDE": "Karras",
                      "DPM++ 2M SDE": "Exponential"}
_NO_SCHEDULE = {"UniPC", "DDIM", "PLMS", "LCM"}  # A1111 runs these without reading a schedule type


def _sampler_pairs(sampler: str) -> list[tuple[str, str]]:
    base, karras = (sampler[: -len(" Karras")], True) if sampler.endswith(" Karras") else (sampler, False)
    if base in _NO_SCHEDULE and not karras:
        return [("Sampler", base)]
    return [("Sampler", base), ("Schedule type", "Karras" if karras else "Uniform")]


def _sampler_from_pairs(pairs: dict) -> str | None:
    """sdlab's sampler for an A1111 Sampler + Schedule type (None: one sdlab cannot run, e.g. Exponential)."""
    from .samplers import canonical_name

    name, schedule = pairs.get("Sampler"), (pairs.get("Schedule type") or "Automatic").strip()
    if name is None:
        return None
    if schedule.lower() == "automatic":
        schedule = AUTOMATIC_SCHEDULE.get(name.strip(), "Uniform")
    if schedule.lower() not in ("karras", "uniform"):
        return None
    try:
        return canonical_name(name, "karras" if schedule.lower() == "karras" else None)
    except ValidationError:
        return None


def format_parameters(spec: GenerationSpec) -> str:
    """The A1111 ``parameters`` text for a resolved spec."""
    lines = [spec.prompt]
    if spec.negative_prompt:
        lines.append(f"{NEGATIVE} {spec.negative_prompt}")
    pairs: list[tuple[str, str]] = []
    if spec.steps is not None:
        pairs.append(("Steps", str(spec.steps)))
    if spec.sampler is not None:
        pairs += _sampler_pairs(spec.sampler)
    if spec.guidance is not None:
        pairs.append(("CFG scale", _number(spec.guidance)))
    pairs.append(("Seed", str(spec.seed)))
    if spec.width is not None and spec.height is not None:
        pairs.append(("Size", f"{spec.width}x{spec.height}"))
    if spec.model_hash:
        pairs.append(("Model hash", spec.model_hash))
    if spec.model:
        pairs.append(("Model", spec.model))
    if spec.init_image is not None:
        pairs.append(("Denoising strength", _number(spec.strength)))
        pairs.append((INIT_HASH, image_hash(spec.init_image)))
    if spec.mask is not None:
        pairs.append(("Mask blur", str(spec.mask_blur)))
        pairs.append((MASK_HASH, image_hash(spec.mask)))
    if spec.outpaint is not None:
        pairs.append((OUTPAINT, ",".join(map(str, spec.outpaint))))
    if spec.clip_skip != 1:
        pairs.append(("Clip skip", str(spec.clip_skip)))
    if spec.batch_size != 1:
        pairs.append((BATCH, str(spec.batch_size)))
    if spec.control:  # A1111's ControlNet extension's units (sdlab.control.infotext)
        from .control.infotext import control_pairs

        pairs += control_pairs(spec)
    written = {k for k, _ in pairs}
    pairs += [(k, str(v)) for k, v in spec.extra.items() if k not in written]
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in pairs))
    return "\n".join(lines)


def parse_parameters(text: str) -> tuple[str, str, dict[str, str]]:
    """Split A1111 ``parameters`` text into (prompt, negative prompt, key/value pairs)."""
    if not isinstance(text, str) or not text.strip():
        raise MetadataError("parameters: the text is empty")
    *lines, last = text.strip().split("\n")
    pairs = _PAIR.findall(last)
    if len(pairs) < 3:  # A1111's rule: then the last line is part of the prompt
        lines.append(last)
        pairs = []
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in lines:
        if line.startswith(NEGATIVE):
            in_negative = True
            line = line[len(NEGATIVE):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    return "\n".join(prompt_lines).strip(), "\n".join(negative_lines).strip(), {k.strip(): _unquote(v) for k, v in pairs}


def _int(pairs: dict, key: str) -> int | None:
    """A whole number; a digit string is read exactly (a 64-bit seed must not pass through a float)."""
    if key not in pairs:
        return None
    try:
        text = pairs[key].strip()
        return int(text) if text.lstrip("-").isdigit() else int(float(text))
    except ValueError:
        raise MetadataError(f"parameters: {key} {pairs[key]!r} is not a number") from None


def _float(pairs: dict, key: str) -> float | None:
    try:
        return float(pairs[key]) if key in pairs else None
    except ValueError:
        raise MetadataError(f"parameters: {key} {pairs[key]!r} is not a number") from None


# Keys held by spec fields. "Denoising strength" and "Mask blur" also stay in ``extra``:
# A1111 writes them for hires fix too, where sdlab has no init image to carry them.
_CONSUMED = {"Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model", "Clip skip", BATCH}


def spec_from_parameters(text: str) -> GenerationSpec:
    """A :class:`GenerationSpec` from A1111 ``parameters`` text; unknown keys go to ``extra``."""
    prompt, negative, pairs = parse_parameters(text)
    width = height = None
    if "Size" in pairs:
        m = _SIZE.match(pairs["Size"].strip())
        if not m:
            raise MetadataError(f"parameters: Size {pairs['Size']!r} is not WIDTHxHEIGHT")
        width, height = int(m.group(1)), int(m.group(2))
    sampler = _sampler_from_pairs(pairs)  # None for a sampler or schedule sdlab lacks: kept as text below
    # Init images, masks and outpaint canvases cannot live in the text: their
    # hashes and margins stay in ``extra`` (reproduce takes the image again).
    extra = {k: v for k, v in pairs.items() if k not in _CONSUMED}
    if sampler is None and "Sampler" in pairs:
        extra["Sampler"] = pairs["Sampler"]
        if "Schedule type" in pairs:
            extra["Schedule type"] = pairs["Schedule type"]
    try:
        from .control.infotext import control_from_pairs

        control, guess_mode, consumed = control_from_pairs(pairs)  # ControlNet N units sdlab can run
        extra = {k: v for k, v in extra.items() if k not in consumed}
        return GenerationSpec(
            prompt=prompt, negative_prompt=negative,
            seed=_int(pairs, "Seed") if "Seed" in pairs else -1,
            steps=_int(pairs, "Steps"), guidance=_float(pairs, "CFG scale"), sampler=sampler,
            width=width, height=height, batch_size=_int(pairs, BATCH) or 1,
            clip_skip=_int(pairs, "Clip skip") or 1,
            strength=_float(pairs, "Denoising strength") if "Denoising strength" in pairs else 0.75,
            mask_blur=_int(pairs, "Mask blur") if "Mask blur" in pairs else 4,
            model=pairs.get("Model"), model_hash=pairs.get("Model hash"),
            control=control, guess_mode=guess_mode, extra=extra,
        )
    except ValidationError as exc:
        raise MetadataError(f"parameters: {exc}") from None


def read_parameters(path: str | Path) -> GenerationSpec:
    """The spec stored in an image by sdlab, AUTOMATIC1111 (text chunk, EXIF, stealth), ComfyUI, InvokeAI,
    NovelAI or Fooocus (:mod:`sdlab.foreign` finds it); a problem is one :class:`MetadataError` line naming the file."""
    from .foreign import fooocus_text, read_image
    from .images import open_image

    image = open_image(path, "png", MetadataError)
    name = Path(path).name
    with image:
        try:
            found = read_image(image)
            if not isinstance(found, str):
                return found
            spec = spec_from_parameters(found)
            return fooocus_text(spec) if str(spec.extra.get("Version", "")).startswith("Fooocus") else spec
        except MetadataError as exc:
            raise MetadataError(f"{name}: {exc}") from None


def save_png(image: Image.Image | np.ndarray, spec: GenerationSpec, out_dir: str | Path) -> Path:
    """Save ``image`` with its ``parameters`` chunk as ``seed-NNNN.png`` in ``out_dir``; never overwrites."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    chunk = PngImagePlugin.PngInfo()
    chunk.add_text("parameters", format_parameters(spec))
    path = unique_path(out_dir, f"{spec.seed}", ".png")
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=chunk)
    return path
