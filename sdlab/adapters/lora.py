"""LoRA files as the community exchanges them: diffusers' format, kohya/A1111's, and A1111's short hash.

- :func:`save_lora` writes what diffusers' own training scripts write
  (``StableDiffusionPipeline.save_lora_weights``: ``pytorch_lora_weights.safetensors``, keys
  ``unet.<module>.lora_A/lora_B.weight`` and the LoRA config in the header under
  ``lora_adapter_metadata``), so plain ``pipe.load_lora_weights(path)`` loads it with the rank and
  alpha it was trained with. (The scripts' ``convert_state_dict_to_diffusers`` renames only attention
  projections; with convolutions targeted too, diffusers' loader then drops the renamed layers, so the
  UNet's keys are kept in peft's form, which the loader reads as they are.)
- :func:`export_kohya` rewrites such a file in kohya sd-scripts' layout, which A1111, ComfyUI and
  InvokeAI read: ``lora_unet_<module with _>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha`` and
  ``lora_te_`` (SD 1.x/2.x) or ``lora_te1_``/``lora_te2_`` (SDXL) for the text encoders. Module names
  follow kohya's ``networks/lora.py``: the diffusers UNet's names for SD 1.x/2.x, the original (sgm)
  UNet's ``input_blocks``/``middle_block``/``output_blocks`` for SDXL (``sdxl_train_network.py``).
  The alpha kept is the one trained with, so kohya's scale ``alpha / rank`` equals peft's.
- :func:`load_lora` reads either (or any other layout diffusers reads) through diffusers' own
  converter, the pipeline class's ``lora_state_dict``: no converter of sdlab's own.
- :func:`lora_hash` is A1111's short hash (``Lora hashes`` in the infotext): the first 12 hex digits
  of SHA-256 over a ``.safetensors`` file's tensor bytes after its header (kohya's "addnet" hash, so
  a file's metadata can change without changing it), or over the whole file for other formats.

Pickled LoRAs (``.pt``/``.bin``/``.ckpt``) are read only with ``allow_pickle=True``, as checkpoints.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import ModelNotFoundError, UnsafeCheckpointError, ValidationError
from ..validation import Interval, invalid, validate_params

LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' file name (LORA_WEIGHT_NAME_SAFE)
METADATA_KEY = "lora_adapter_metadata"  # diffusers' header key for the LoraConfig
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")
LORA_SUFFIXES = (".safetensors",) + PICKLE_SUFFIXES
# The diffusers pipeline class whose LoRA loader/saver serves each family (sdlab.models.family names).
PIPELINES = {"sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline", "sd-inpaint": "StableDiffusionPipeline",
             "sdxl": "StableDiffusionXLPipeline", "sd3": "StableDiffusion3Pipeline"}
KOHYA_FAMILIES = ("sd1", "sd2", "sd-inpaint", "sdxl")


def _pipeline_class(family: str):
    import diffusers

    validate_params({"family": family}, {"family": [_options(PIPELINES)]})
    return getattr(diffusers, PIPELINES[family])


def _options(names):
    from ..validation import Options

    return Options(dict.fromkeys(names))


# -- hashes and sizes ---------------------------------------------------------------------------------
def addnet_hash(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a ``.safetensors`` file's bytes after its header (kohya sd-scripts / A1111)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        header = int.from_bytes(f.read(8), "little")
        f.seek(8 + header)
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of the whole file (A1111's ``hashes.calculate_sha256``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_HASHES: dict[tuple, str] = {}  # (kind, path, size, mtime) -> hash, as A1111 caches hashes by file and mtime


def cached_hash(kind: str, path: str | os.PathLike, compute) -> str:
    """``compute(path)``, remembered while the file's size and modification time stay the same."""
    stat = Path(path).stat()
    key = (kind, str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = compute(path)
    return _HASHES[key]


def lora_hash(path: str | os.PathLike) -> str:
    """A1111's ``Lora hashes`` value for a file: 12 hex digits (addnet hash for safetensors, else whole-file SHA-256)."""
    path = Path(path)
    full = cached_hash("addnet", path, addnet_hash) if path.suffix.lower() == ".safetensors" else cached_hash("sha256", path, file_sha256)
    return full[:12]


def file_size(path: str | os.PathLike) -> int:
    """Bytes on disk."""
    return Path(path).stat().st_size


# -- reading --------------------------------------------------------------------------------------------
def read_state_dict(path: str | os.PathLike, allow_pickle: bool = False, what: str = "lora") -> tuple[dict, dict]:
    """(tensors, header metadata) of a LoRA or embedding file; a pickle only with ``allow_pickle``."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{what}: no such file {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except Exception as exc:  # safetensors raises its own error types for a damaged header
            raise ValidationError(f"{what}: {path.name} is not a readable safetensors file ({type(exc).__name__})") from None
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise UnsafeCheckpointError(
                f"{what}: {path.name} is a pickle file, and loading a pickle can run arbitrary code; "
                "convert it to .safetensors or pass allow_pickle=True (CLI: --allow-pickle) if you trust its source"
            )
        import torch

        try:
            return torch.load(str(path), map_location="cpu", weights_only=False), {}
        except Exception as exc:  # a damaged or foreign pickle: torch raises many kinds
            raise ValidationError(f"{what}: {path.name} is not a readable torch file ({type(exc).__name__})") from None
    raise invalid(what, path.name, f"a file ending in {', '.join(LORA_SUFFIXES)}")


def is_kohya(state_dict: dict) -> bool:
    """Whether the keys are kohya/A1111's (``lora_unet_``, ``lora_te_``, ``lora_te1_``, ``lora_te2_``)."""
    return bool(state_dict) and all(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in state_dict)


def load_lora(path: str | os.PathLike, family: str, unet_config=None, allow_pickle: bool = False) -> tuple[dict, dict | None, dict | None]:
    """(state dict, network alphas, LoRA config metadata) in diffusers' layout, for a pipeline of ``family``.

    Kohya/A1111 files go through diffusers' converter (the pipeline class's ``lora_state_dict``; SDXL's
    needs the UNet's config to map the original UNet's block names). Diffusers' files keep their keys and
    the LoRA config written in the header.
    """
    tensors, header = read_state_dict(path, allow_pickle)
    cls = _pipeline_class(family)
    kwargs = {"unet_config": unet_config} if family == "sdxl" and unet_config is not None else {}
    try:
        out = cls.lora_state_dict(dict(tensors), **kwargs)
        state_dict, alphas = (out, None) if isinstance(out, dict) else out[:2]  # SD 3's returns the dict alone
    except (ValueError, KeyError) as exc:
        raise ValidationError(f"lora: {Path(path).name} is not a LoRA diffusers can read for {family} ({str(exc).splitlines()[0][:120]})") from None
    metadata = json.loads(header[METADATA_KEY]) if METADATA_KEY in header else None
    return state_dict, alphas or None, metadata


# -- writing ---------------------------------------------------------------------------------------------
def _lora_config(state_dict: dict, rank: int, alpha: float) -> dict:
    targets = sorted({k.split(".lora")[0] for k in state_dict})
    return {"r": int(rank), "lora_alpha": float(alpha), "target_modules": targets, "init_lora_weights": "gaussian"}


def save_lora(
    path: str | os.PathLike,
    unet_lora_state_dict: dict,
    text_encoder_lora_state_dict: dict | None = None,
    text_encoder_2_lora_state_dict: dict | None = None,
    *,
    family: str = "sd1",
    rank: int,
    alpha: float | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write a LoRA as diffusers' training scripts do; returns the ``.safetensors`` file.

    The state dicts are peft's (``get_peft_model_state_dict(unet)``: ``<module>.lora_A.weight``/``lora_B``,
    no prefix; the UNet's is the SD 3 transformer's for ``family="sd3"``). ``rank`` and ``alpha``
    (default: ``rank``, scale 1) are the ``LoraConfig``'s, written in the header as diffusers does so
    ``load_lora_weights`` restores the trained scale. ``metadata``: extra text entries for the header
    (kohya's ``ss_*`` keys, for example). ``path``: a directory (the file is ``pytorch_lora_weights.safetensors``
    in it) or a file name ending in ``.safetensors``. Written atomically.
    """
    from diffusers.utils import convert_state_dict_to_diffusers

    validate_params({"rank": rank}, {"rank": [Interval(int, 1, None)]})
    alpha = float(rank if alpha is None else alpha)
    validate_params({"alpha": alpha}, {"alpha": [Interval(float, 0, None, closed="neither")]})
    if not unet_lora_state_dict and not text_encoder_lora_state_dict:
        raise ValidationError("save_lora: both state dicts are empty; valid: the LoRA weights of the UNet and/or the text encoder")
    cls = _pipeline_class(family)
    path = Path(path)
    directory, name = (path.parent, path.name) if path.suffix == ".safetensors" else (path, LORA_FILE)
    layers: dict[str, Any] = {}
    lora_meta: dict[str, Any] = {}
    first = "transformer" if family == "sd3" else "unet"
    for key, sd in ((first, unet_lora_state_dict), ("text_encoder", text_encoder_lora_state_dict),
                    ("text_encoder_2", text_encoder_2_lora_state_dict)):
        if sd:
            if key == "text_encoder_2" and family not in ("sdxl", "sd3"):
                raise invalid("text_encoder_2_lora_state_dict", "given", f"None for {family}: it has one text encoder")
            sd = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
            lora_meta[f"{key}_lora_adapter_metadata"] = _lora_config(sd, rank, alpha)  # targets match with or without text_model.
            if key.startswith("text_encoder"):
                sd = {_text_model_key(k): v for k, v in sd.items()}
            # the denoiser's keys stay peft's (lora_A/lora_B): diffusers' converter renames only attention projections,
            # and its loader, seeing a first key already in peft's form, would then skip the renamed ones silently
            layers[f"{key}_lora_layers"] = sd if key in ("unet", "transformer") else convert_state_dict_to_diffusers(sd)
    from ..io import atomic_path

    target = directory / name
    with atomic_path(target) as tmp:
        cls.save_lora_weights(save_directory=str(tmp.parent), weight_name=tmp.name, safe_serialization=True, **layers, **lora_meta)
        if metadata:
            _add_header_metadata(tmp, {str(k): str(v) for k, v in metadata.items()})
    return target


def _text_model_key(key: str) -> str:
    """A CLIP text encoder key as every tool names it: ``text_model.encoder...`` (transformers 5's
    ``CLIPTextModel`` drops the ``text_model`` level; diffusers' loader strips it again where absent)."""
    return f"text_model.{key}" if key.startswith(("encoder.", "embeddings.", "final_layer_norm.")) else key


def _add_header_metadata(path: Path, extra: dict[str, str]) -> None:
    """Rewrite a safetensors file with ``extra`` text entries added to its header metadata."""
    from safetensors.torch import save_file

    tensors, header = read_state_dict(path)
    save_file(tensors, str(path), metadata={**header, **extra})


# -- kohya / A1111 layout ---------------------------------------------------------------------------------
_RESNET_TO_SGM = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}


def _sgm_module(module: str, layers_per_block: int) -> str:
    """An SDXL diffusers UNet module name in the original UNet's naming, as kohya's SDXL LoRAs use
    (the inverse of diffusers' ``_maybe_map_sgm_blocks_to_diffusers``)."""
    per = layers_per_block + 1

    def resnet_rest(rest: str) -> str:
        head, _, tail = rest.partition(".")
        return _RESNET_TO_SGM.get(head, head) + (f".{tail}" if tail else "")

    m = re.match(r"down_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.(.+)", module)
    if m:
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        inner = 1 if kind == "attentions" else 0
        return f"input_blocks.{1 + b * per + j}.{inner}.{rest if kind == 'attentions' else resnet_rest(rest)}"
    m = re.match(r"mid_block\.(attentions|resnets)\.(\d+)\.(.+)", module)
    if m:
        kind, j, rest = m[1], int(m[2]), m[3]
        return f"middle_block.{1 if kind == 'attentions' else 2 * j}.{rest if kind == 'attentions' else resnet_rest(rest)}"
    m = re.match(r"up_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.(.+)", module)
    if m:
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        inner = 1 if kind == "attentions" else 0
        return f"output_blocks.{b * per + j}.{inner}.{rest if kind == 'attentions' else resnet_rest(rest)}"
    raise ValidationError(f"export_kohya: SDXL module {module!r} has no kohya name sdlab writes; valid: attention and resnet layers of the down, mid and up blocks")


def _peft_modules(state_dict: dict) -> dict[str, dict]:
    """``{prefix.module: {"down": A, "up": B}}`` from diffusers' keys (peft ``lora_A``/``lora_B`` or ``lora.down``/``lora.up``)."""
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft, convert_unet_state_dict_to_peft

    modules: dict[str, dict] = {}
    for prefix in ("unet", "text_encoder", "text_encoder_2"):
        part = {k[len(prefix) + 1:]: v for k, v in state_dict.items() if k.startswith(prefix + ".")}
        if not part:
            continue
        if prefix == "unet":
            part = convert_unet_state_dict_to_peft(part)
        else:  # as diffusers' text-encoder loader reads them
            part = {_text_model_key(k): v for k, v in convert_state_dict_to_peft(convert_state_dict_to_diffusers(part)).items()}
        for key, value in part.items():
            module, _, kind = key.rpartition(".lora_")
            modules.setdefault(f"{prefix}.{module}", {})["down" if kind.startswith("A") else "up"] = value
    return modules


def export_kohya(diffusers_lora_file: str | os.PathLike, out_file: str | os.PathLike, family: str = "sd1",
                 unet_config=None, allow_pickle: bool = False) -> Path:
    """Write ``diffusers_lora_file`` in kohya/A1111's layout as ``out_file`` (``.safetensors``, atomically).

    ``unet_config`` (SDXL only: its ``layers_per_block``) places the original UNet's block numbers.
    Each module gets its ``alpha`` so kohya's scale ``alpha / rank`` is the one the file was trained with.
    """
    import torch
    from safetensors.torch import save_file

    validate_params({"family": family}, {"family": [_options(KOHYA_FAMILIES)]})
    out_file = Path(out_file)
    if out_file.suffix != ".safetensors":
        raise invalid("out_file", str(out_file), "a file name ending in .safetensors")
    state_dict, header = read_state_dict(diffusers_lora_file, allow_pickle)
    if is_kohya(state_dict):
        raise ValidationError(f"export_kohya: {Path(diffusers_lora_file).name} is already in kohya's layout")
    if family == "sdxl" and unet_config is None:
        raise ValidationError("export_kohya: an SDXL LoRA needs unet_config (the UNet's config) to number the original UNet's blocks")
    config = json.loads(header[METADATA_KEY]) if METADATA_KEY in header else {}
    modules = _peft_modules(state_dict)
    if not modules:
        raise ValidationError(f"export_kohya: {Path(diffusers_lora_file).name} holds no LoRA weights of a UNet or text encoder "
                              "(keys like unet.<module>.lora_A.weight or unet.<module>.lora.down.weight)")
    out: dict[str, Any] = {}
    for name, pair in sorted(modules.items()):
        if set(pair) != {"down", "up"}:
            raise ValidationError(f"export_kohya: {name} lacks its {'up' if 'down' in pair else 'down'} weight")
        prefix, _, module = name.partition(".")
        if prefix == "unet":
            kohya = "lora_unet_" + (_sgm_module(module, unet_config.layers_per_block) if family == "sdxl" else module).replace(".", "_")
        else:
            te = {"text_encoder": "lora_te1_" if family == "sdxl" else "lora_te_", "text_encoder_2": "lora_te2_"}[prefix]
            kohya = te + module.replace(".", "_")
        rank = pair["down"].shape[0]
        alpha = _module_alpha(config, prefix, module, rank)
        out[f"{kohya}.lora_down.weight"] = pair["down"].contiguous()
        out[f"{kohya}.lora_up.weight"] = pair["up"].contiguous()
        out[f"{kohya}.alpha"] = torch.tensor(float(alpha), dtype=pair["down"].dtype)
    from ..io import atomic_path

    with atomic_path(out_file) as tmp:
        save_file(out, str(tmp), metadata={"format": "pt", "ss_network_module": "networks.lora"})
    return out_file


def _module_alpha(config: dict, prefix: str, module: str, rank: int) -> float:
    """The LoRA alpha diffusers would use for ``module`` from the header's config (rank when none: scale 1)."""
    alpha = config.get(f"{prefix}.lora_alpha")
    for key, value in (config.get(f"{prefix}.alpha_pattern") or {}).items():
        if module == key or module.endswith("." + key):
            alpha = value
    if alpha is None:
        return float(rank)
    # peft scales by alpha / r (rsLoRA: alpha / sqrt(r)), with r the module's own rank; kohya by alpha / rank
    return float(alpha) * rank**0.5 if config.get(f"{prefix}.use_rslora") else float(alpha)


def describe_lora(path: str | os.PathLike, allow_pickle: bool = False) -> dict:
    """What a LoRA file holds: its layout, A1111 hash, size, modules per component, ranks and alphas."""
    state_dict, header = read_state_dict(path, allow_pickle)
    kohya = is_kohya(state_dict)
    if kohya:
        downs = {k[: -len(".lora_down.weight")]: v for k, v in state_dict.items() if k.endswith(".lora_down.weight")}
        parts = {p: sum(1 for k in downs if k.startswith(p)) for p in ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")}
        alphas = sorted({round(float(v), 6) for k, v in state_dict.items() if k.endswith(".alpha")})
        ranks = sorted({int(v.shape[0]) for v in downs.values()})
    else:
        modules = _peft_modules(state_dict) if not any(k.startswith("transformer.") for k in state_dict) else {
            k.rsplit(".lora", 1)[0]: {"down": v} for k, v in state_dict.items() if ".lora_A" in k or "lora.down" in k}
        parts = {p: sum(1 for k in modules if k.startswith(p + ".")) for p in ("unet", "transformer", "text_encoder", "text_encoder_2")}
        ranks = sorted({int(m["down"].shape[0]) for m in modules.values() if "down" in m})
        config = json.loads(header[METADATA_KEY]) if METADATA_KEY in header else {}
        alphas = sorted({float(v) for k, v in config.items() if k.endswith(".lora_alpha")}) or ["= rank (no alpha recorded)"]
    return {"file": Path(path).name, "format": "kohya/A1111" if kohya else "diffusers", "hash": lora_hash(path),
            "bytes": file_size(path), "modules": {k.strip("_."): v for k, v in parts.items() if v}, "ranks": ranks, "alphas": alphas}
