"""Where other tools keep their generation text in an image file, and their JSON read into a spec.

Looked for in this order (REFERENCE.md, "A1111 since v1.9"):

- ``parameters`` text chunk: AUTOMATIC1111's text (parsed by :mod:`sdlab.metadata`), also Fooocus's, whose
  ``Scheduler`` key holds the schedule; or Fooocus's own JSON scheme;
- ``prompt``: ComfyUI's API graph (:mod:`sdlab.comfyui`);
- ``invokeai_metadata`` (InvokeAI 3 and later, JSON), ``sd-metadata`` (InvokeAI 2, JSON), ``Dream`` (InvokeAI 1,
  a command line: ``"prompt" -s steps -S seed -W width -H height -C cfg -A sampler``);
- ``Comment``: NovelAI's JSON (``uc`` the negative prompt, ``scale`` the CFG), its prompt also in ``Description``;
- EXIF ``UserComment`` (0x9286 in the Exif IFD, or IFD0 as Fooocus writes it): A1111's JPEG and WebP files,
  piexif's ``UNICODE\\0`` prefix and UTF-16 text;
- "stealth" text in the pixels' least significant bits (A1111's stealth-pnginfo extension, NovelAI): see
  :func:`stealth_text`.

Names are mapped to sdlab's A1111 names where a mapping exists (:mod:`sdlab.interop`); the rest is reported in
``extra["unmapped"]``.
"""
from __future__ import annotations

import gzip
import re
import shlex
import zlib
from typing import Any

import numpy as np
from PIL import Image

from .errors import MetadataError
from .interop import a1111_sampler, build_spec, load_json, model_stem, numbers, real, whole
from .spec import GenerationSpec

EXIF_IFD, USER_COMMENT = 0x8769, 0x9286
_STEALTH = {b"stealth_pnginfo": ("alpha", False), b"stealth_pngcomp": ("alpha", True),
            b"stealth_rgbinfo": ("rgb", False), b"stealth_rgbcomp": ("rgb", True)}
_SIGNATURE_BITS, _LENGTH_BITS = 120, 32


# -- where the text is -------------------------------------------------------------------------
def _bits(lsb_source: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` low bits in the extension's order: column by column (x outer, y inner), channels in turn."""
    h, w, c = lsb_source.shape
    columns = min(w, -(-n // (h * c)))
    return (lsb_source[:, :columns].transpose(1, 0, 2) & 1).reshape(-1)[:n]


def stealth_text(image: Image.Image) -> str | None:
    """Text hidden by A1111's stealth-pnginfo extension, or None when there is no signature.

    The extension walks the pixels column by column and takes the least significant bit of alpha
    (``stealth_pnginfo``, gzip: ``stealth_pngcomp``) or of R, G and B in turn (``stealth_rgbinfo``,
    ``stealth_rgbcomp``): 15 signature bytes, a 32-bit big-endian count of payload *bits*, then the payload
    (UTF-8, or gzip of it), each byte most significant bit first.
    """
    if image.mode not in ("RGB", "RGBA"):
        return None
    pixels = np.asarray(image)
    candidates = [("rgb", pixels[..., :3])] + ([("alpha", pixels[..., 3:4])] if image.mode == "RGBA" else [])
    for channel, source in candidates:
        head = _bits(source, _SIGNATURE_BITS + _LENGTH_BITS)
        found = _STEALTH.get(np.packbits(head[:_SIGNATURE_BITS]).tobytes())
        if found is None or found[0] != channel:
            continue
        compressed = found[1]
        if len(head) < _SIGNATURE_BITS + _LENGTH_BITS:
            raise MetadataError("stealth text: the image ends inside the length header")
        n = int("".join(map(str, head[_SIGNATURE_BITS:])), 2)
        bits = _bits(source, _SIGNATURE_BITS + _LENGTH_BITS + n)[_SIGNATURE_BITS + _LENGTH_BITS:]
        if n == 0 or n % 8 or len(bits) < n:
            raise MetadataError(f"stealth text: the header announces {n} bits but the image holds {len(bits)} "
                                "(truncated or not stealth data)")
        data = np.packbits(bits).tobytes()
        if not compressed:
            return data.decode("utf-8", errors="ignore")  # as the extension reads it
        try:
            return gzip.decompress(data).decode("utf-8")
        except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
            raise MetadataError(f"stealth text: the compressed payload is corrupt ({exc})") from None
    return None


def _decode_comment(raw: Any) -> str:
    """An EXIF UserComment as text: its 8-byte character code, then the text (piexif writes UTF-16 big-endian
    after ``UNICODE\\0``; some writers use little-endian, told apart by where the zero bytes of ASCII fall)."""
    if isinstance(raw, str):
        return raw.rstrip("\0")
    raw = bytes(raw)
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\0":
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            text = body.decode("utf-16", errors="replace")
        else:
            even, odd = body[0::2].count(0), body[1::2].count(0)
            text = body.decode("utf-16-be" if even >= odd else "utf-16-le", errors="replace")
    elif prefix == b"JIS\0\0\0\0\0":
        text = body.decode("shift_jis", errors="replace")
    elif prefix in (b"ASCII\0\0\0", b"\0" * 8):
        text = body.decode("utf-8", errors="replace")
    else:
        text = raw.decode("utf-8", errors="replace")
    return text.rstrip("\0")


def user_comment(image: Image.Image) -> str | None:
    """The EXIF UserComment (Exif IFD first, then IFD0), or None."""
    try:
        exif = image.getexif()
        raw = exif.get_ifd(EXIF_IFD).get(USER_COMMENT)
        raw = exif.get(USER_COMMENT) if raw is None else raw
    except Exception:  # Pillow's EXIF parser raises many types on a malformed block
        return None
    text = _decode_comment(raw).strip() if raw is not None else ""
    return text or None


def text_chunks(image: Image.Image) -> dict[str, str]:
    """The image's text entries (PNG tEXt/iTXt/zTXt, WebP/JPEG comments) by key."""
    chunks = {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}
    chunks.update({k: v for k, v in (getattr(image, "text", None) or {}).items() if isinstance(v, str)})
    comment = image.info.get("comment")
    if isinstance(comment, bytes) and comment.strip():
        chunks.setdefault("comment", comment.decode("utf-8", errors="replace"))
    return chunks


# -- dispatch ----------------------------------------------------------------------------------
def read_image(image: Image.Image) -> GenerationSpec | str:
    """The spec an image's metadata describes, or, for A1111's text, the text itself (for :mod:`sdlab.metadata`)."""
    chunks = text_chunks(image)
    if "parameters" in chunks:
        return from_text(chunks["parameters"], "parameters")
    if "prompt" in chunks:
        from .comfyui import spec_from_comfyui

        return spec_from_comfyui(chunks["prompt"])
    if "invokeai_metadata" in chunks:
        return spec_from_invokeai(chunks["invokeai_metadata"])
    if "sd-metadata" in chunks:
        return spec_from_invokeai2(chunks["sd-metadata"])
    if "Dream" in chunks:
        return spec_from_dream(chunks["Dream"])
    if "Comment" in chunks and (chunks.get("Software", "").startswith("NovelAI") or '"uc"' in chunks["Comment"]):
        return spec_from_novelai(chunks["Comment"], chunks.get("Description"), chunks.get("Source"))
    comment = user_comment(image)
    if comment is not None:
        return from_text(comment, "EXIF UserComment")
    if "comment" in chunks and "Steps: " in chunks["comment"]:
        return from_text(chunks["comment"], "comment")
    hidden = stealth_text(image)
    if hidden is not None:
        return from_text(hidden, "stealth text")
    if "workflow" in chunks:  # ComfyUI saved the UI's graph only: its widgets hold the values
        from .comfyui import spec_from_workflow

        return spec_from_workflow(chunks["workflow"])
    raise MetadataError("no generation metadata (no 'parameters' or ComfyUI 'prompt' text chunk, no InvokeAI, "
                        "NovelAI or Fooocus metadata, no EXIF UserComment, no stealth text)")


def from_text(text: str, where: str) -> GenerationSpec | str:
    """Stored text: a tool's JSON read into a spec, or A1111 text returned as it is."""
    if not text.lstrip().startswith("{"):
        if not text.strip():
            raise MetadataError(f"{where}: the text is empty")
        return text
    data = load_json(text, where)
    if "Comment" in data:  # NovelAI's stealth text: its chunks as one JSON object
        return spec_from_novelai(data["Comment"], data.get("Description"), data.get("Source"))
    if isinstance(data.get("prompt"), str) and data["prompt"].lstrip().startswith("{"):  # ComfyUI's chunks
        from .comfyui import spec_from_comfyui

        return spec_from_comfyui(data["prompt"])
    if data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        from .comfyui import spec_from_comfyui

        return spec_from_comfyui(text)
    if isinstance(data.get("nodes"), list) and "links" in data:  # a saved ComfyUI workflow (.json)
        from .comfyui import spec_from_workflow

        return spec_from_workflow(text)
    if {"guidance_scale", "resolution", "base_model"} & set(data):
        return spec_from_fooocus(data)
    raise MetadataError(f"{where}: JSON from a tool sdlab does not read (keys: {', '.join(list(data)[:8])})")


# -- Fooocus -----------------------------------------------------------------------------------
def _fooocus_notes(values: dict, unmapped: list[str]) -> None:
    styles = str(values.get("styles") or values.get("Styles") or "")
    if styles not in ("", "[]"):
        unmapped.append(f"Fooocus styles {styles} (prompt expansion and style templates are not applied)")
    for key in ("refiner_model", "Refiner"):
        if values.get(key) not in (None, "", "None"):
            unmapped.append(f"refiner {values[key]}")
    if values.get("loras") or values.get("Lora hashes"):
        unmapped.append("LoRAs")
    for keys in (("sharpness", "Sharpness"), ("adm_guidance", "ADM Guidance")):
        value = next((values[k] for k in keys if k in values), None)
        if value not in (None, "", 0, 0.0, "0"):
            unmapped.append(f"{keys[0]} {value} (Fooocus's own, not applied)")


def spec_from_fooocus(data: dict) -> GenerationSpec:
    """Fooocus's JSON scheme: prompt, negative_prompt, steps, resolution ``"(w, h)"``, guidance_scale, sampler
    and scheduler (ComfyUI names), seed, base_model."""
    where, unmapped, extra = "Fooocus", [], {}
    width = height = None
    if "resolution" in data:
        m = re.fullmatch(r"\s*\(\s*'?(\d+)'?\s*,\s*'?(\d+)'?\s*\)\s*", str(data["resolution"]))
        if not m:
            raise MetadataError(f"{where}: resolution {data['resolution']!r} is not '(width, height)'")
        width, height = int(m.group(1)), int(m.group(2))
    sampler = a1111_sampler(data["sampler"], data.get("scheduler"), unmapped, extra) if "sampler" in data else None
    _fooocus_notes(data, unmapped)
    for key in ("version", "performance", "full_prompt"):
        if key in data:
            extra[f"Fooocus {key}"] = data[key]
    fields = dict(
        prompt=str(data.get("prompt", "")), negative_prompt=str(data.get("negative_prompt", "")),
        **numbers(data, where, seed="seed", steps="steps", guidance="guidance_scale"), sampler=sampler, width=width, height=height,
        model=model_stem(data["base_model"]) if data.get("base_model") else None,
        model_hash=data.get("base_model_hash") or None,
    )
    return build_spec("Fooocus", fields, extra, unmapped)


def fooocus_text(spec: GenerationSpec) -> GenerationSpec:
    """A spec read from Fooocus's A1111-style text, its sampler taken from ``Sampler`` and Fooocus's ``Scheduler``
    (Fooocus writes no ``Schedule type``, so A1111's "Automatic" reading does not apply)."""
    extra = {k: v for k, v in spec.extra.items() if k not in ("Sampler", "Schedule type")}
    name = spec.extra.get("Sampler") or spec.sampler
    unmapped: list[str] = []
    sampler = a1111_sampler(name, extra.get("Scheduler"), unmapped, extra) if name else None
    _fooocus_notes(extra, unmapped)
    if unmapped:
        extra["unmapped"] = "; ".join(dict.fromkeys(unmapped))
    return spec.replace(sampler=sampler, extra={"source": "Fooocus", **extra})


# -- InvokeAI ----------------------------------------------------------------------------------
def spec_from_invokeai(text: str) -> GenerationSpec:
    """InvokeAI 3+'s ``invokeai_metadata``: positive_prompt, negative_prompt, seed, steps, cfg_scale, scheduler,
    width, height, model {name, hash}, clip_skip (layers skipped: A1111's clip skip minus one)."""
    where, unmapped, extra = "InvokeAI invokeai_metadata", [], {}
    data = load_json(text, where)
    mode = str(data.get("generation_mode", "txt2img"))
    if "txt2img" not in mode:
        unmapped.append(f"generation_mode {mode} (its source image is not in the file)")
        if "strength" in data:
            extra["Denoising strength"] = real(data["strength"], "strength", where)
    sampler = a1111_sampler(data["scheduler"], None, unmapped, extra) if data.get("scheduler") else None
    model, model_hash = data.get("model"), None
    if isinstance(model, dict):
        model, model_hash = model.get("name") or model.get("model_name"), model.get("hash")
    for key in ("loras", "controlnets", "ipAdapters", "t2iAdapters"):
        if data.get(key):
            unmapped.append(f"{key} ({len(data[key]) if isinstance(data[key], list) else 1} not applied)")
    if data.get("hrf_enabled"):
        unmapped.append("high-resolution fix (hrf_*)")
    if data.get("refiner_model"):
        unmapped.append("SDXL refiner")
    if data.get("positive_style_prompt") not in (None, "", data.get("positive_prompt")):
        unmapped.append(f"SDXL style prompt {data['positive_style_prompt']!r}")
    if data.get("cfg_rescale_multiplier"):
        unmapped.append(f"cfg_rescale_multiplier {data['cfg_rescale_multiplier']}")
    fields = dict(
        prompt=str(data.get("positive_prompt", "")), negative_prompt=str(data.get("negative_prompt", "")), sampler=sampler,
        **numbers(data, where, seed="seed", steps="steps", guidance="cfg_scale", width="width", height="height"),
        clip_skip=whole(data.get("clip_skip") or 0, "clip_skip", where) + 1,
        model=str(model) if model else None, model_hash=str(model_hash) if model_hash else None,
    )
    return build_spec("InvokeAI", fields, extra, unmapped)


_NEGATIVE = re.compile(r"\[([^\[\]]*)\]")  # InvokeAI 1-2: text in square brackets is the negative prompt


def _invoke2_prompt(prompt: str) -> tuple[str, str]:
    negative = ", ".join(p.strip() for p in _NEGATIVE.findall(prompt) if p.strip())
    return re.sub(r"\s+", " ", _NEGATIVE.sub(" ", prompt)).strip(" ,"), negative


def _invoke2_sampler(name: Any, unmapped: list[str], extra: dict) -> str | None:
    sampler = a1111_sampler(name, None, unmapped, extra)
    if sampler and str(name).startswith("k_"):
        unmapped.append(f"schedule of {name} (InvokeAI 1-2 chose Karras sigmas by a karras_max setting it did not record)")
    return sampler


def spec_from_invokeai2(text: str) -> GenerationSpec:
    """InvokeAI 2's ``sd-metadata``: ``model_weights``, ``model_hash`` and an ``image`` object (prompt, steps,
    cfg_scale, seed, width, height, sampler, type)."""
    where, unmapped, extra = "InvokeAI sd-metadata", [], {}
    data = load_json(text, where)
    image = data.get("image")
    if not isinstance(image, dict):
        raise MetadataError(f"{where}: no 'image' object with the generation values")
    prompt = image.get("prompt", "")
    if isinstance(prompt, list):  # [{"prompt": ..., "weight": ...}, ...]
        parts = [p for p in prompt if isinstance(p, dict)]
        if len(parts) > 1:
            unmapped.append("weighted prompt blend (its parts joined with AND)")
        prompt = " AND ".join(str(p.get("prompt", "")) for p in parts)
    prompt, negative = _invoke2_prompt(str(prompt))
    sampler = _invoke2_sampler(image["sampler"], unmapped, extra) if image.get("sampler") else None
    if image.get("type", "txt2img") != "txt2img":
        unmapped.append(f"type {image['type']} (its source image is not in the file)")
    for key in ("variations", "hires_fix", "seamless", "threshold", "perlin"):
        if image.get(key):
            unmapped.append(f"{key} {image[key]}")
    fields = dict(
        prompt=prompt, negative_prompt=negative, sampler=sampler,
        **numbers(image, where, seed="seed", steps="steps", guidance="cfg_scale", width="width", height="height"),
        model=data.get("model_weights") or None, model_hash=data.get("model_hash") or None,
    )
    return build_spec("InvokeAI", fields, extra, unmapped)


_DREAM = {"--steps": "-s", "--seed": "-S", "--width": "-W", "--height": "-H", "--cfg_scale": "-C", "--sampler": "-A",
          "-m": "-A", **{flag: flag for flag in ("-s", "-S", "-W", "-H", "-C", "-A")}}


def spec_from_dream(text: str) -> GenerationSpec:
    """InvokeAI 1's ``Dream`` chunk: the prompt, then ``-s steps -S seed -W width -H height -C cfg -A sampler``
    (also ``-S1234`` without a space)."""
    where, unmapped, extra = "InvokeAI Dream", [], {}
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise MetadataError(f"{where}: not a command line ({exc})") from None
    words, values, i = [], {}, 0
    while i < len(tokens):
        token = tokens[i]
        if not re.match(r"^--?[A-Za-z]", token):
            words.append(token)
            i += 1
            continue
        flag, value = (token.split("=", 1) + [None])[:2] if token.startswith("--") else (token[:2], token[2:] or None)
        if value is None:
            value = tokens[i + 1] if i + 1 < len(tokens) else ""
            i += 1
        i += 1
        if flag in _DREAM:
            values[_DREAM[flag]] = value
        else:
            unmapped.append(f"option {flag} {value}")
    prompt, negative = _invoke2_prompt(" ".join(words))
    fields = dict(
        prompt=prompt, negative_prompt=negative,
        sampler=_invoke2_sampler(values["-A"], unmapped, extra) if "-A" in values else None,
        **numbers(values, where, seed="-S", steps="-s", guidance="-C", width="-W", height="-H"),
    )
    return build_spec("InvokeAI", fields, extra, unmapped)


# -- NovelAI -----------------------------------------------------------------------------------
def spec_from_novelai(comment: Any, description: Any = None, source: Any = None) -> GenerationSpec:
    """NovelAI's ``Comment`` JSON (prompt, uc, steps, scale, seed, sampler, noise_schedule, width, height), the
    prompt also in ``Description``, the model in ``Source``."""
    where, unmapped, extra = "NovelAI Comment", [], {}
    data = comment if isinstance(comment, dict) else load_json(comment, where)
    prompt = data.get("prompt", description if description is not None else "")
    sampler = (a1111_sampler(data["sampler"], data.get("noise_schedule", "native"), unmapped, extra)
               if data.get("sampler") else None)
    if data.get("request_type") not in (None, "PromptGenerateRequest"):
        unmapped.append(f"request_type {data['request_type']} (its source image is not in the file)")
    for key in ("sm", "sm_dyn", "dynamic_thresholding", "cfg_rescale", "skip_cfg_above_sigma"):
        if data.get(key):
            unmapped.append(f"{key} {data[key]}")
    captions = ((data.get("v4_prompt") or {}).get("caption") or {}).get("char_captions") if isinstance(data.get("v4_prompt"), dict) else None
    if captions:
        unmapped.append(f"{len(captions)} character prompt(s) (v4_prompt char_captions)")
    fields = dict(
        prompt=str(prompt), negative_prompt=str(data.get("uc", "")), sampler=sampler,
        **numbers(data, where, seed="seed", steps="steps", guidance="scale", width="width", height="height"),
        model=str(source) if source else None,
    )
    return build_spec("NovelAI", fields, extra, unmapped)
