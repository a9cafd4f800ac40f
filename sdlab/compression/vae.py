"""The VAE behind the latent codec: its 4-byte identity, and loading it by model name or directory.

A latent byte string can only be decoded by the VAE that made it, so each
string carries :func:`vae_id` and a decoder with another VAE refuses it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import ModelNotFoundError


def vae_id(vae: Any) -> bytes:
    """4-byte id of a VAE: SHA-256 of its config and float16 weights.

    Hashing the weights in float16 gives the same id to the same VAE in float32
    or float16 and on any device, and a different id to any other weights.
    """
    h = hashlib.sha256()
    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu").half().contiguous().numpy().tobytes())
    return h.digest()[:4]


def _vae_dir(model: str) -> tuple[Path, bool] | None:
    """The directory holding ``model``'s VAE and whether it is a pipeline's ``vae/`` folder; None when not on disk."""
    from .. import models

    if model == models.SHAPES_WORLD:
        folder = models.SHIPPED_DIR / "vae"
        if not (folder / "config.json").is_file():
            raise ModelNotFoundError(f"model: the shapes-world VAE is missing from {folder}; reinstall sdlab")
        return folder, True
    path = Path(model).expanduser()
    if not path.is_dir():
        return None
    for folder in (path / "vae", path):
        if (folder / "config.json").is_file():
            return folder, folder != path
    raise ModelNotFoundError(f"model: {model!r} holds no VAE (no config.json in it or in its vae/ folder)")


def load_vae(model: str | os.PathLike = "shapes-world", device: str = "cpu") -> Any:
    """The ``AutoencoderKL`` of ``model``, in eval mode on ``device``.

    ``model``: "shapes-world" (the VAE of the pipeline shipped with sdlab), a
    diffusers pipeline directory (its ``vae/``), a bare VAE directory, or any
    other name :func:`sdlab.models.load_pipeline` knows (a hub alias, a
    single-file checkpoint), whose pipeline is loaded for its VAE. A
    pipeline's VAE gets the pipeline's dtype (float16 on CUDA), a bare VAE
    directory float32.
    """
    import torch

    from .. import models

    found = _vae_dir(os.fspath(model))
    if found is None:
        return models.load_pipeline(model, device=device).vae.eval()
    from diffusers import AutoencoderKL

    folder, of_pipeline = found
    device = models.resolve_device(device)
    dtype = models.resolve_dtype("auto", device) if of_pipeline else torch.float32
    return AutoencoderKL.from_pretrained(folder, dtype=dtype).to(device).eval()
