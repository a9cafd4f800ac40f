"""Textual-inversion embeddings in the files users exchange, read and written.

Layouts, as A1111's ``create_embedding_from_data`` (modules/textual_inversion) tells them apart:

- A1111's own (``.pt``, a pickle): ``{"string_to_token": {"*": 265}, "string_to_param": {"*": vectors},
  "name", "step", "sd_checkpoint", "sd_checkpoint_name"}``;
- SDXL (A1111, kohya, civitai; ``.safetensors``): ``{"clip_l": (n, 768), "clip_g": (n, 1280)}``, one
  vector set per text encoder;
- one tensor under one key: diffusers' ``learned_embeds.safetensors`` (``{token: (n, d)}``, what its
  ``textual_inversion.py`` writes and ``pipe.load_textual_inversion(path, token=...)`` reads) and
  kohya's ``{"emb_params": (n, d)}``.

:func:`save_embedding` writes ``format="diffusers"`` (``{token: vectors}``) or ``format="a1111"``
(``.pt``: ``string_to_param``; ``.safetensors``: kohya's ``emb_params``, which A1111 reads);
SDXL vectors are written as ``clip_l``/``clip_g`` in either. Reading a pickle (``.pt``/``.bin``)
needs ``allow_pickle=True``, as checkpoints do. :func:`embedding_hash` is A1111's ``TI hashes``
value: the first 12 hex digits of the file's SHA-256.

Vectors are kept per pipeline component: ``{"text_encoder": (n, d)}`` for SD 1.x/2.x, plus
``"text_encoder_2"`` for SDXL (``clip_l`` is the first encoder, ``clip_g`` the second).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ValidationError
from ..validation import Options, invalid, validate_params
from .lora import PICKLE_SUFFIXES, cached_hash, file_sha256, read_state_dict

EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
SDXL_KEYS = {"clip_l": "text_encoder", "clip_g": "text_encoder_2"}
A1111_TOKEN_ID = 265  # the placeholder id A1111 writes in string_to_token (it never reads it)


@dataclass
class Embedding:
    """A named set of new token vectors, one (n, width) tensor per text encoder."""

    name: str
    vectors: dict[str, Any]  # component name -> torch.Tensor (n_vectors, width)
    path: Path | None = None
    step: int | None = None
    extra: dict = field(default_factory=dict)  # sd_checkpoint, sd_checkpoint_name when the file had them

    @property
    def n_vectors(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])

    def widths(self) -> dict[str, int]:
        return {k: int(v.shape[-1]) for k, v in self.vectors.items()}


def embedding_hash(path: str | os.PathLike) -> str:
    """A1111's short hash of an embedding file (``TI hashes``): SHA-256 of the whole file, 12 hex digits."""
    return cached_hash("sha256", path, file_sha256)[:12]


def _as_matrix(tensor, what: str):
    import torch

    if not torch.is_tensor(tensor):
        raise ValidationError(f"embedding: {what} is a {type(tensor).__name__}, not a tensor")
    tensor = tensor.detach().to("cpu", torch.float32)
    if tensor.ndim == 1:
        tensor = tensor[None]
    if tensor.ndim != 2 or tensor.shape[0] < 1:
        raise ValidationError(f"embedding: {what} has shape {tuple(tensor.shape)}; valid: (vectors, width)")
    return tensor


def embedding_from_data(data: Any, name: str, path: Path | None = None) -> Embedding:
    """An :class:`Embedding` from a loaded file's contents, by A1111's rules (see the module docstring)."""
    if not isinstance(data, dict) or not data:
        raise ValidationError(f"embedding: {name} holds no embedding (an empty or non-dict file)")
    if "string_to_param" in data:
        params = data["string_to_param"]
        params = getattr(params, "_parameters", params)  # torch 1.11 ParameterDicts, as A1111 reads them
        if len(params) != 1:
            raise ValidationError(f"embedding: {name} has {len(params)} terms in string_to_param; valid: exactly 1")
        extra = {k: data[k] for k in ("sd_checkpoint", "sd_checkpoint_name") if data.get(k) is not None}
        step = data.get("step")
        return Embedding(name, {"text_encoder": _as_matrix(next(iter(params.values())), "string_to_param")}, path,
                         int(step) if step is not None else None, extra)
    if "clip_g" in data and "clip_l" in data:
        vectors = {SDXL_KEYS[k]: _as_matrix(data[k], k) for k in ("clip_l", "clip_g")}
        if vectors["text_encoder"].shape[0] != vectors["text_encoder_2"].shape[0]:
            raise ValidationError(f"embedding: {name} has {vectors['text_encoder'].shape[0]} clip_l and "
                                  f"{vectors['text_encoder_2'].shape[0]} clip_g vectors; valid: the same number")
        return Embedding(name, vectors, path)
    if len(data) == 1:
        key, value = next(iter(data.items()))
        return Embedding(name, {"text_encoder": _as_matrix(value, repr(key))}, path)
    raise ValidationError(f"embedding: {name} is neither an A1111 (string_to_param), SDXL (clip_l/clip_g) "
                          f"nor a one-tensor (diffusers/kohya) embedding; keys: {', '.join(sorted(map(str, data))[:6])}")


def read_embedding(path: str | os.PathLike, allow_pickle: bool = False, name: str | None = None) -> Embedding:
    """Read an embedding file (its name: the file's stem, as A1111 names it, unless ``name`` is given)."""
    path = Path(path)
    if path.suffix.lower() not in EMBEDDING_SUFFIXES:
        raise invalid("embedding", path.name, f"a file ending in {', '.join(EMBEDDING_SUFFIXES)}")
    data, _ = read_state_dict(path, allow_pickle, what="embedding")
    return embedding_from_data(data, name or path.stem, path)


def _vector_sets(vectors: Any) -> dict[str, Any]:
    """Accept a tensor (one encoder) or a dict keyed by clip_l/clip_g or component names."""
    if isinstance(vectors, dict):
        sets = {SDXL_KEYS.get(k, k): _as_matrix(v, k) for k, v in vectors.items()}
        if set(sets) not in ({"text_encoder"}, {"text_encoder", "text_encoder_2"}):
            raise invalid("vectors", sorted(vectors), "a tensor, or a dict with clip_l and clip_g (SDXL)")
        return sets
    return {"text_encoder": _as_matrix(vectors, "vectors")}


def save_embedding(path: str | os.PathLike, token: str, vectors: Any, format: str = "diffusers", *,
                   step: int | None = None, checkpoint_hash: str | None = None, checkpoint_name: str | None = None) -> Path:
    """Write an embedding; returns the path (written atomically).

    ``vectors``: a (n, width) tensor for SD 1.x/2.x, or ``{"clip_l": ..., "clip_g": ...}`` for SDXL.
    ``format="diffusers"``: ``.safetensors`` with ``{token: vectors}``, which plain
    ``pipe.load_textual_inversion(path, token=token)`` loads. ``format="a1111"``: ``.pt`` in A1111's
    ``string_to_param`` layout (with ``step`` and the checkpoint it was trained on), or ``.safetensors``
    as kohya writes (``emb_params``). SDXL vectors go as ``clip_l``/``clip_g`` in both formats.
    """
    import torch

    validate_params({"format": format}, {"format": [Options(("diffusers", "a1111"))]})
    if not isinstance(token, str) or not token.strip() or any(c in token for c in "<>:,()[]"):
        raise invalid("token", token, "a word without spaces at its ends or the characters < > : , ( ) [ ]")
    path = Path(path)
    suffixes = (".safetensors",) if format == "diffusers" else (".safetensors", ".pt")
    if path.suffix.lower() not in suffixes:
        raise invalid("path", path.name, f"a file ending in {' or '.join(suffixes)} for format={format!r}")
    sets = {k: v.contiguous() for k, v in _vector_sets(vectors).items()}
    sdxl = "text_encoder_2" in sets
    if sdxl:
        data = {"clip_l": sets["text_encoder"], "clip_g": sets["text_encoder_2"]}
    elif format == "diffusers":
        data = {token: sets["text_encoder"]}
    elif path.suffix.lower() == ".pt":
        data = {"string_to_token": {"*": A1111_TOKEN_ID}, "string_to_param": {"*": sets["text_encoder"]}, "name": token,
                "step": step, "sd_checkpoint": checkpoint_hash, "sd_checkpoint_name": checkpoint_name}
    else:
        data = {"emb_params": sets["text_encoder"]}
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".pt":
            torch.save(data if not sdxl else dict(data), str(tmp))
        else:
            from safetensors.torch import save_file

            save_file(data, str(tmp), metadata={"format": "pt"})
    return path


def convert_embedding(src: str | os.PathLike, dst: str | os.PathLike, format: str = "diffusers", token: str | None = None,
                      allow_pickle: bool = False) -> Path:
    """Rewrite an embedding file in another layout (e.g. A1111's ``.pt`` as diffusers' ``.safetensors``)."""
    emb = read_embedding(src, allow_pickle)
    vectors = emb.vectors["text_encoder"] if len(emb.vectors) == 1 else {"clip_l": emb.vectors["text_encoder"], "clip_g": emb.vectors["text_encoder_2"]}
    return save_embedding(dst, token or emb.name, vectors, format, step=emb.step,
                          checkpoint_hash=emb.extra.get("sd_checkpoint"), checkpoint_name=emb.extra.get("sd_checkpoint_name"))


def is_pickle(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in PICKLE_SUFFIXES
