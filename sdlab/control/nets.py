"""ControlNet models by name, directory or hub id, as :func:`sdlab.models.load_pipeline` finds pipelines.

Registered names (``CONTROLNETS``): the shapes world's own ControlNets, shipped
in the package (``shapes-world-edges``, ``shapes-world-mask``), and real
checkpoints read from the local Hugging Face cache (never downloaded unless
``download=True``). A loaded model is a plain diffusers ``ControlNetModel``
(``SD3ControlNetModel`` for SD 3) whose :class:`~sdlab.models.ModelInfo` is
kept beside it (``models.model_info``): the name and A1111's hash written in
the ``ControlNet N`` infotext (``Model: name [hash]``).

A1111's ControlNet extension names a model by its file's stem and the *legacy*
model hash: the first 8 hex digits of the SHA-256 of the 64 KiB at offset 1 MiB
(``sd_models.model_hash``). Files under 1 MiB all hash as the empty string
(``e3b0c442``): A1111 cannot tell tiny models apart by hash, so sdlab finds a
ControlNet by name first and checks the hash only when it tells something.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFoundError, UnsafeCheckpointError
from ..models import ModelInfo, model_info, register
from ..validation import invalid

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
EMPTY_HASH = hashlib.sha256(b"").hexdigest()[:8]  # what A1111's legacy hash gives a file under 1 MiB


@dataclass(frozen=True)
class Registered:
    source: str  # a directory under sdlab/weights, or a hub id
    control_type: str  # the map it reads
    family: str  # the pipelines it fits
    shipped: bool = False


CONTROLNETS: dict[str, Registered] = {
    "shapes-world-edges": Registered("shapes-world-controlnet-edges", "edges", "sd1", shipped=True),
    "shapes-world-mask": Registered("shapes-world-controlnet-mask", "mask", "sd1", shipped=True),
    "sd15-canny": Registered("lllyasviel/control_v11p_sd15_canny", "edges", "sd1"),
    "sd15-depth": Registered("lllyasviel/control_v11f1p_sd15_depth", "depth", "sd1"),
    "sdxl-canny": Registered("diffusers/controlnet-canny-sdxl-1.0", "edges", "sdxl"),
    "sdxl-depth": Registered("diffusers/controlnet-depth-sdxl-1.0", "depth", "sdxl"),
    "sd3-canny": Registered("InstantX/SD3-Controlnet-Canny", "edges", "sd3"),  # for SD 3 medium (diffusers format)
}


def a1111_hash(path: str | os.PathLike) -> str:
    """A1111's legacy model hash (``sd_models.model_hash``): 8 hex digits of SHA-256 of 64 KiB at 1 MiB."""
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def weights_file(directory: Path) -> Path | None:
    """The weights file of a diffusers model directory (the file A1111 would hash)."""
    found = sorted(directory.glob("diffusion_pytorch_model*.safetensors")) or sorted(directory.glob("*.safetensors"))
    return found[0] if found else None


def resolve(model: str, download: bool = False, allow_pickle: bool = False) -> tuple[str, str]:
    """(name, local directory, file or hub id) for a ControlNet name, directory or single file; checks only, loads nothing.

    A single file (A1111's and ComfyUI's way, :mod:`.single_file`) is named by its stem, as A1111 names it."""
    from .single_file import is_file

    name = os.fspath(model)
    path = Path(name).expanduser()
    if is_file(name):
        if not path.is_file():
            raise ModelNotFoundError(f"control model: no such file {name!r}")
        if path.suffix.lower() != ".safetensors" and not allow_pickle:
            raise UnsafeCheckpointError(f"control model: {path.name} is a pickle file, and loading a pickle can run arbitrary code; "
                                        "convert it to .safetensors or pass allow_pickle=True (CLI: --allow-pickle) if you trust its source")
        return path.stem, str(path)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"control model: {name!r} is a directory but not a diffusers ControlNet (no config.json)")
        return path.name, str(path)
    known = CONTROLNETS.get(name)
    if known is not None and known.shipped:
        directory = WEIGHTS / known.source
        if not (directory / "config.json").exists():
            raise ModelNotFoundError(f"control model: the {name} weights are missing from {directory}; "
                                     "train them with 'sdlab train controlnet --out DIR' and pass DIR")
        return name, str(directory)
    if known is not None or "/" in name:
        repo = known.source if known else name
        from ..models import _hub_cached

        local = _hub_cached(repo)
        if local is None and not download:
            raise ModelNotFoundError(f"control model: {name!r} ({repo}) is not in the local Hugging Face cache and sdlab "
                                     f"does not download by itself; fetch it once with 'huggingface-cli download {repo}'")
        return name, local or repo
    valid = ", ".join(CONTROLNETS)
    raise ModelNotFoundError(f"control model: {name!r} is not a registered ControlNet ({valid}) or a ControlNet directory")


_LOADED: dict[tuple, object] = {}  # (source, device, dtype) -> model: a name used again is not read again
_KEEP = 4


def load_controlnet(model: str | os.PathLike, device: str = "cpu", dtype=None, download: bool = False, unet=None, allow_pickle: bool = False):
    """A ControlNet (plain diffusers model) by registered name, directory, cached hub id or single file, in ``dtype``
    on ``device``. A single file has no config: ``unet`` (the pipeline's) gives it (:mod:`.single_file`)."""
    import json

    import diffusers

    from .single_file import is_file, to_controlnet

    name, source = resolve(os.fspath(model), download, allow_pickle)
    single = is_file(source)
    if single and unet is None:
        raise invalid("control model", name, "a ControlNet directory, or a single file with the pipeline's unet= (its config comes from the UNet)")
    key = (source, str(device), str(dtype), Path(source).stat().st_mtime_ns if single else None,
           json.dumps(dict(unet.config), sort_keys=True, default=str) if single else None)
    if key in _LOADED:
        return _LOADED[key]
    if single:
        from ..adapters.lora import read_state_dict

        net = to_controlnet(read_state_dict(source, allow_pickle, what="control model")[0], unet)
        net = net.to(device).eval()
        if dtype is not None and dtype != next(net.parameters()).dtype:
            net = net.to(dtype)
        weights = Path(source)
    else:
        config = Path(source) / "config.json"
        class_name = json.loads(config.read_text(encoding="utf-8")).get("_class_name", "") if config.exists() else ""
        cls = diffusers.SD3ControlNetModel if class_name.startswith("SD3") else diffusers.ControlNetModel
        net = cls.from_pretrained(source, **({"dtype": dtype} if dtype is not None else {})).to(device).eval()
        weights = weights_file(Path(source)) if Path(source).is_dir() else None
    register(net, ModelInfo(name=name, source=source, _hash=a1111_hash(weights) if weights else None))
    if len(_LOADED) >= _KEEP:
        _LOADED.pop(next(iter(_LOADED)))
    _LOADED[key] = net
    return net


def name_and_hash(net) -> tuple[str, str]:
    """A loaded ControlNet's name and A1111 hash (a model sdlab did not load: its directory's name and weights)."""
    info = model_info(net)
    if info._hash is None:
        source = Path(info.source)
        weights = weights_file(source) if source.is_dir() else None
        info._hash = a1111_hash(weights) if weights else hashlib.sha256(info.source.encode()).hexdigest()[:8]
        if source.is_dir() and info.name == info.source:
            info.name = source.name
    return info.name, info.hash


def folder_files(folder: str | os.PathLike, what: str = "controlnet folder") -> list[Path]:
    """The ControlNet files at the top of ``folder`` (A1111's ``models/ControlNet``), sorted; one line if it is no folder."""
    from .single_file import SUFFIXES

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise invalid(what, str(folder), "an existing folder of ControlNet files (A1111: models/ControlNet)")
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def find_in_folder(folder: str | os.PathLike, name: str, model_hash: str | None = None) -> Path | None:
    """A1111's lookup of ``Model: name [hash]`` in its ControlNet folder: the file whose stem is ``name``,
    else the one whose legacy hash is ``model_hash`` (the empty-file hash of files under 1 MiB tells nothing)."""
    files = folder_files(folder)
    for path in files:
        if path.stem == name:
            return path
    if model_hash and model_hash.lower() != EMPTY_HASH:
        for path in files:
            if a1111_hash(path) == model_hash.lower():
                return path
    return None
