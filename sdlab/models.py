"""Loading pipelines: the shapes world offline, real SD checkpoints through the same function.

``load_pipeline`` returns a plain diffusers pipeline, untouched; what sdlab
knows about it (:class:`ModelInfo`: name, short hash, family, recommended
defaults, preview factors) is kept beside it in a registry keyed by the
pipeline object, and read with :func:`model_info`. A pipeline sdlab did not
load gets a ModelInfo worked out from its own config. Nothing is downloaded unless the
caller says ``download=True``: a classroom without internet gets a one-line
error that names the model and says how to fetch it, never a hang.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelNotFoundError, UnsafeCheckpointError, ValidationError
from .threads import apply_thread_policy

SDLAB_META = "sdlab.json"  # sdlab's own notes saved beside a diffusers pipeline
MODEL_DEFAULTS = {"guidance": 5.0, "sampler": "DPM++ 2M", "steps": 25}
SHAPES_WORLD = "shapes-world"
SHIPPED_DIR = Path(__file__).resolve().parent / "weights" / SHAPES_WORLD

# Latent -> RGB preview factors from ../shared/REFERENCE.md (rows: latent channels; columns: R, G, B).
SD1_PREVIEW = {
    "latent_rgb_factors": [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]],
    "latent_rgb_bias": [0.0, 0.0, 0.0],
}
SDXL_PREVIEW = {
    "latent_rgb_factors": [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]],
    "latent_rgb_bias": [0.1084, -0.0175, -0.0011],
}


@dataclass(frozen=True)
class HubModel:
    repo_id: str
    defaults: dict
    preview: dict | None


HUB_ALIASES: dict[str, HubModel] = {
    "sd14": HubModel("CompVis/stable-diffusion-v1-4", {"guidance": 7.5, "sampler": "PLMS", "steps": 50, "width": 512, "height": 512}, SD1_PREVIEW),
    "sd15": HubModel("stable-diffusion-v1-5/stable-diffusion-v1-5", {"guidance": 7.5, "sampler": "DPM++ 2M Karras", "steps": 25, "width": 512, "height": 512}, SD1_PREVIEW),
    "sd2-depth": HubModel("stabilityai/stable-diffusion-2-depth", {"guidance": 7.5, "sampler": "DDIM", "steps": 50, "width": 512, "height": 512}, SD1_PREVIEW),
    "sd21": HubModel("stabilityai/stable-diffusion-2-1", {"guidance": 7.5, "sampler": "DPM++ 2M Karras", "steps": 25, "width": 768, "height": 768}, SD1_PREVIEW),
    "sdxl": HubModel("stabilityai/stable-diffusion-xl-base-1.0", {"guidance": 7.0, "sampler": "DPM++ 2M Karras", "steps": 30, "width": 1024, "height": 1024}, SDXL_PREVIEW),
    "sd35-medium": HubModel("stabilityai/stable-diffusion-3.5-medium", {"guidance": 4.5, "sampler": "Euler", "steps": 28, "width": 1024, "height": 1024}, None),
}
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


@dataclass
class ModelInfo:
    """What sdlab knows about a loaded model, for defaults, previews and metadata."""

    name: str
    source: str  # directory, file or hub id the weights came from
    defaults: dict = field(default_factory=lambda: dict(MODEL_DEFAULTS))
    preview: dict | None = None
    extra: dict = field(default_factory=dict)
    _hash: str | None = None

    @property
    def hash(self) -> str:
        """A1111-style short hash: first 10 hex digits of SHA-256 of the (UNet) weights file."""
        if self._hash is None:
            self._hash = _short_hash(self.source)
        return self._hash


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _short_hash(source: str) -> str:
    path = Path(source)
    if path.is_file():
        return _sha256(path)[:10]
    if path.is_dir():
        weights = sorted(path.glob("unet/*.safetensors")) or sorted(path.glob("transformer/*.safetensors"))
        if weights:
            digest = hashlib.sha256("".join(_sha256(w) for w in weights).encode())
            return digest.hexdigest()[:10]
    return hashlib.sha256(source.encode()).hexdigest()[:10]


FAMILIES = ("sd1", "sd2", "sd-inpaint", "sd2-depth", "sdxl", "sd3")


def family(pipe) -> str:
    """The architecture family of a pipeline, read from its components (not its name).

    ``sd3``: an MMDiT transformer with flow matching; ``sdxl``: a UNet with two text
    encoders; ``sd-inpaint``: a 9-channel UNet (SD 1.x/2.x inpainting); ``sd2-depth``: a 5-channel
    depth2img UNet (latents + depth, SD 2 depth); ``sd2``: a
    v-predicting (or 1024-wide OpenCLIP) SD 2.x UNet; ``sd1``: everything else
    of SD 1.x's shape, the shapes world included (a v-predicting shapes world reads as sd2).
    """
    if getattr(pipe, "transformer", None) is not None:
        return "sd3"
    if getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl"
    unet = pipe.unet
    if int(unet.config.in_channels) == 9:
        return "sd-inpaint"
    if int(unet.config.in_channels) == 5:
        return "sd2-depth"
    if pipe.scheduler.config.get("prediction_type") == "v_prediction" or unet.config.cross_attention_dim == 1024:
        return "sd2"
    return "sd1"


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> cuda, then mps, then cpu; an explicit name is checked."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ValidationError(f"device: {device!r} is not valid; use auto, cpu, cuda, cuda:N or mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValidationError(f"device: {device!r} requested but this torch has no CUDA (torch {torch.__version__}); use cpu")
    return device


def resolve_dtype(dtype: Any = "auto", device: str = "cpu"):
    """``auto`` -> fp16 on CUDA, fp32 elsewhere; also accepts 'fp16', 'bf16', 'fp32' or a torch dtype."""
    import torch

    names = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp32": torch.float32, "float32": torch.float32}
    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in names:
        raise ValidationError(f"dtype: {dtype!r} is not valid; use auto, fp16, bf16 or fp32")
    return names[dtype]


def _read_meta(directory: Path) -> dict:
    path = directory / SDLAB_META
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _info_for_directory(directory: Path, name: str | None = None) -> ModelInfo:
    meta = _read_meta(directory)
    return ModelInfo(
        name=name or meta.get("name") or directory.name,
        source=str(directory),
        defaults={**MODEL_DEFAULTS, **meta.get("defaults", {})},
        preview=meta.get("preview"),
        extra={k: v for k, v in meta.items() if k not in ("name", "defaults", "preview")},
    )


def _single_file_class(path: Path):
    """Pick the diffusers pipeline class for an original-format checkpoint from its tensor names."""
    from diffusers import StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    if any(k.startswith("conditioner.embedders.1") for k in keys):
        return StableDiffusionXLPipeline
    if any("joint_blocks" in k for k in keys):
        return StableDiffusion3Pipeline
    return StableDiffusionPipeline


def _hub_cached(repo_id: str) -> str | None:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except Exception:
        return None


def config_size_factor(model: str | os.PathLike) -> int | None:
    """What :func:`sdlab.generate.size_factor` will say, read from a local pipeline's configs without loading it
    (None when the configs are not on disk here: a hub id, a single checkpoint file)."""
    name = os.fspath(model)
    directory = SHIPPED_DIR if name == SHAPES_WORLD else Path(name).expanduser()
    vae = directory / "vae" / "config.json"
    if not vae.is_file():
        return None
    factor = 2 ** (len(json.loads(vae.read_text(encoding="utf-8")).get("block_out_channels", [0] * 4)) - 1)
    transformer = directory / "transformer" / "config.json"
    if transformer.is_file() and not (directory / "unet").is_dir():
        factor *= int(json.loads(transformer.read_text(encoding="utf-8")).get("patch_size", 1))
    return factor


def locate(model: str | os.PathLike = SHAPES_WORLD, allow_pickle: bool = False) -> tuple[Path | None, dict]:
    """Where ``model``'s weights are and its recommended defaults, without importing torch or loading a weight.

    Refuses, as :func:`load_pipeline` would, what cannot be loaded: a missing file, a directory that is not
    a pipeline, a pickle without ``allow_pickle``, a name that is neither registered nor cached. The path is
    None for a hub id whose files are not in the cache (``download=True`` will fetch them). Commands call it
    before any long work, so a bad ``--model`` is one line in a second, not a traceback after the work.
    """
    name = os.fspath(model)
    path = Path(name).expanduser()
    if name == SHAPES_WORLD:
        return SHIPPED_DIR, _info_for_directory(SHIPPED_DIR, SHAPES_WORLD).defaults
    if path.is_dir():
        if not (path / "model_index.json").exists():
            raise ModelNotFoundError(f"model: {name!r} is a directory but not a diffusers pipeline (no model_index.json)")
        return path, _info_for_directory(path).defaults
    if path.suffix.lower() in PICKLE_SUFFIXES + (".safetensors",):
        if not path.is_file():
            raise ModelNotFoundError(f"model: no such file {name!r}" if not path.exists() else f"model: {name!r} is not a file")
        if path.suffix.lower() != ".safetensors" and not allow_pickle:
            raise UnsafeCheckpointError(
                f"model: {path.name} is a pickle checkpoint, and loading a pickle can run arbitrary code; "
                "convert it to .safetensors or pass allow_pickle=True (CLI: --allow-pickle) if you trust its source")
        return path, dict(MODEL_DEFAULTS)
    if name in HUB_ALIASES or ("/" in name and not path.exists() and len(name.split("/")) == 2 and not name.startswith((".", "/", "~"))):
        hub = HUB_ALIASES.get(name, HubModel(name, dict(MODEL_DEFAULTS), None))
        local = _hub_cached(hub.repo_id)
        return (Path(local) if local else None), {**MODEL_DEFAULTS, **hub.defaults}
    if path.exists():
        raise ModelNotFoundError(f"model: {name!r} is not a diffusers directory, a .safetensors file or a checkpoint")
    valid = ", ".join([SHAPES_WORLD, *HUB_ALIASES])
    raise ModelNotFoundError(f"model: {name!r} is not valid; valid: a registered name ({valid}), an existing diffusers "
                             "directory or checkpoint file, or a hub id owner/name in the local cache")


def load_pipeline(
    model: str | os.PathLike = SHAPES_WORLD,
    device: str = "auto",
    dtype: Any = "auto",
    allow_pickle: bool = False,
    download: bool = False,
    vae: str | os.PathLike | None = None,
):
    """Load a diffusers pipeline by registered name, local directory or single checkpoint file.

    - ``shapes-world``: the project's own model, shipped in the package.
    - ``sd14``, ``sd15``, ``sd21``, ``sdxl``, ``sd35-medium`` (or any hub id
      ``owner/name``): from the local Hugging Face cache; fetched only when
      ``download=True``.
    - a directory with ``model_index.json``; a single ``.safetensors`` file.
    - ``.ckpt``/``.pt``/``.bin`` pickles are refused unless ``allow_pickle=True``:
      unpickling runs code from the file.

    ``vae`` replaces the checkpoint's VAE, loaded in ``dtype``: a diffusers ``AutoencoderKL``
    directory (or a pipeline directory with ``vae/``), or a hub id in the local cache. SDXL's own
    VAE overflows in fp16, so its config asks for fp32 decoding (``force_upcast``, which diffusers'
    SDXL pipelines apply to every call, and :func:`sdlab.precision.decoding_vae` to sdlab's own);
    a VAE fixed for fp16 (``madebyollin/sdxl-vae-fp16-fix``) decodes in fp16 and saves that memory.

    Its :class:`ModelInfo` is registered for :func:`model_info`.
    """
    locate(model, allow_pickle)  # what cannot be loaded fails here, before diffusers (seconds of import) loads
    from diffusers import DiffusionPipeline

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    name = os.fspath(model)
    path = Path(name).expanduser()
    parts = {} if vae is None else {"vae": _load_vae(vae, torch_dtype, download)}

    if name == SHAPES_WORLD:
        if not (SHIPPED_DIR / "model_index.json").exists():
            raise ModelNotFoundError(
                f"the shapes-world weights are missing from {SHIPPED_DIR}; reinstall sdlab or train them with 'sdlab mini train --out DIR'"
            )
        pipe = DiffusionPipeline.from_pretrained(SHIPPED_DIR, dtype=torch_dtype, **parts)
        info = _info_for_directory(SHIPPED_DIR, SHAPES_WORLD)
    elif path.is_dir():
        if not (path / "model_index.json").exists():
            raise ModelNotFoundError(f"model: {name!r} is a directory but not a diffusers pipeline (no model_index.json)")
        pipe = DiffusionPipeline.from_pretrained(path, dtype=torch_dtype, **parts, **_without_depth_estimator(path))
        info = _info_for_directory(path)
    elif path.suffix.lower() in PICKLE_SUFFIXES:
        if not path.exists():
            raise ModelNotFoundError(f"model: no such file {name!r}")
        if not allow_pickle:
            raise UnsafeCheckpointError(
                f"model: {path.name} is a pickle checkpoint, and loading a pickle can run arbitrary code; "
                "convert it to .safetensors or pass allow_pickle=True (CLI: --allow-pickle) if you trust its source"
            )
        pipe = _from_single_file(path, torch_dtype, parts)
        info = ModelInfo(name=path.stem, source=str(path))
    elif path.suffix.lower() == ".safetensors":
        if not path.exists():
            raise ModelNotFoundError(f"model: no such file {name!r}")
        pipe = _from_single_file(path, torch_dtype, parts)
        info = ModelInfo(name=path.stem, source=str(path))
    else:  # a registered name or a hub id (locate refused anything else)
        hub = HUB_ALIASES.get(name, HubModel(name, dict(MODEL_DEFAULTS), None))
        local = _hub_cached(hub.repo_id)
        if local is None and not download:
            raise ModelNotFoundError(
                f"model {name!r} ({hub.repo_id}) is not in the local Hugging Face cache and sdlab does not download by itself; "
                f"fetch it once with 'huggingface-cli download {hub.repo_id}' or load_pipeline({name!r}, download=True)"
            )
        pipe = DiffusionPipeline.from_pretrained(local or hub.repo_id, dtype=torch_dtype, **parts,
                                                 **_without_depth_estimator(Path(local) if local else None))
        info = ModelInfo(name=name, source=local or hub.repo_id, defaults={**MODEL_DEFAULTS, **hub.defaults}, preview=hub.preview)

    if vae is not None:
        info.extra["vae"] = os.fspath(vae)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    register(pipe, info)
    apply_thread_policy(pipe)  # one CPU thread for small models (sdlab.threads; SDLAB_THREADS=torch keeps torch's)
    return pipe


def _without_depth_estimator(directory: Path | None) -> dict:
    """depth2img pipelines load without their depth estimator: sdlab takes the user's depth map (sdlab.control)."""
    index = directory / "model_index.json" if directory is not None else None
    if index is None or not index.exists() or "Depth2Img" not in json.loads(index.read_text(encoding="utf-8")).get("_class_name", ""):
        return {}
    return {"depth_estimator": None, "feature_extractor": None}


def _from_single_file(path: Path, torch_dtype, parts: dict):
    cls = _single_file_class(path) if path.suffix.lower() == ".safetensors" else None
    if cls is None:
        from diffusers import StableDiffusionPipeline as cls  # pickles: SD 1.x/2.x is by far the common case
    try:
        return cls.from_single_file(str(path), dtype=torch_dtype, local_files_only=True, **parts)
    except Exception as exc:
        raise ModelNotFoundError(
            f"model: could not load {path.name} as {cls.__name__} offline ({type(exc).__name__}); "
            "single-file loading needs the model's config in the local Hugging Face cache"
        ) from None


def check_vae(vae: str | os.PathLike) -> None:
    """Refuse, before anything loads, a ``vae`` that :func:`load_pipeline` could not load (no download)."""
    name = os.fspath(vae)
    path = Path(name).expanduser()
    if not path.exists() and "/" in name and not name.startswith((".", "/", "~")):
        if _hub_cached(name) is None:
            raise ModelNotFoundError(f"vae: {name!r} is not in the local Hugging Face cache; fetch it once with 'huggingface-cli download {name}'")
        return
    if not any((folder / "config.json").exists() for folder in (path, path / "vae")):
        raise ModelNotFoundError(f"vae: {name!r} is not a VAE directory (config.json), a pipeline directory with vae/, or a cached hub id")


def _load_vae(vae: str | os.PathLike, torch_dtype, download: bool):
    """An ``AutoencoderKL`` from a directory (its own, or a pipeline's ``vae/``) or a cached hub id."""
    from diffusers import AutoencoderKL

    name = os.fspath(vae)
    path = Path(name).expanduser()
    if not path.exists() and "/" in name:  # a hub id
        local = _hub_cached(name)
        if local is None and not download:
            raise ModelNotFoundError(f"vae: {name!r} is not in the local Hugging Face cache; fetch it once with 'huggingface-cli download {name}'")
        if local is None:
            return AutoencoderKL.from_pretrained(name, dtype=torch_dtype)
        path = Path(local)
    for folder in (path, path / "vae"):
        if (folder / "config.json").exists():
            return AutoencoderKL.from_pretrained(folder, dtype=torch_dtype)
    raise ModelNotFoundError(f"vae: {name!r} is not a VAE directory (config.json), a pipeline directory with vae/, or a cached hub id")


def rebuild_pipeline(pipe, **parts):
    """A new pipeline of ``pipe``'s class from its components with ``parts`` replaced (``pipe`` is not changed)."""
    extra = {"requires_safety_checker": False} if pipe.components.get("safety_checker", 0) is None else {}
    return type(pipe)(**{**pipe.components, **parts}, **extra)


def share_pipeline(cls, pipe, **parts):
    """A ``cls`` pipeline sharing ``pipe``'s components (diffusers' ``from_pipe``) with ``parts`` replaced, in the
    denoiser's dtype: ``from_pipe`` ends with ``.to(dtype)``, float32 unless told, which would cast the user's shared
    fp16/bf16 modules. Its notice about modules kept in float32 (there are none) is silenced for the call."""
    from diffusers.utils import logging as diffusers_logging

    denoiser = parts.get("unet") or parts.get("transformer") or getattr(pipe, "unet", None) or getattr(pipe, "transformer")
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        return cls.from_pipe(pipe, dtype=denoiser.dtype, **parts)
    finally:
        diffusers_logging.set_verbosity(verbosity)


_INFOS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # pipeline -> ModelInfo, dropped with the pipeline


def register(pipe, info: ModelInfo) -> None:
    """Record what sdlab knows about ``pipe`` (kept beside it, never on it)."""
    _INFOS[pipe] = info


def model_info(pipe) -> ModelInfo:
    """The :class:`ModelInfo` of a pipeline (worked out from its config for one not loaded through sdlab)."""
    info = _INFOS.get(pipe)
    if info is None:
        source = getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path", "unknown")
        info = _info_for_directory(Path(source)) if Path(str(source)).is_dir() else ModelInfo(name=str(source), source=str(source))
        _INFOS[pipe] = info
    return info
