"""What work will cost before it runs: peak memory and, on the CPU, time, refused when the machine lacks them.

A generation's cost is read from the model's own configs (the UNet's or transformer's channels, levels and
attention, the VAE's decoder) without loading a weight: activations alive at once (skip connections and
the widest working set, both CFG halves, the whole batch) beside the weights' file sizes; the decoder's
full-resolution tensors after the loop. Time is the same count in floating-point operations (convolutions,
projections, attention's quadratic term) over this machine's matrix-multiply rate, measured in a few
milliseconds, at half efficiency: an order of magnitude, not a promise. Any verb with other long work
(a dataset held in memory, many generations) states its own bytes and seconds through :func:`check_budget`.

Refusals read like every other (``cost: '4096x4096, 1 image, 25 steps' is not valid; valid: ...``) and
say how to run anyway (``--force`` on the command line, ``force=True`` in Python).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .validation import invalid

TIME_LIMIT_S = 2 * 3600.0  # longer CPU work must be asked for with force
MEMORY_SHARE = 0.9  # of the memory available now
EFFICIENCY = 0.33  # share of one core's small-matmul rate a generation reaches (measured: benchmarks/bench_cost.py)
ACTIVATION_FACTOR = 3.0  # copies the counted tensors have alive at once (measured: benchmarks/bench_cost.py)
TEXT_TOKENS = {"sd3": 333}  # SD 3's joint attention adds the prompt's tokens to the image's
SD1_UNET = {"block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "transformer_layers_per_block": 1,
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]}  # a model sdlab cannot read
SD1_VAE = {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2}


@dataclass(frozen=True)
class Cost:
    """An estimate: peak bytes, seconds (None off the CPU), and what the device has now."""

    peak_bytes: float
    weight_bytes: float
    seconds: float | None
    available_bytes: float
    device: str


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.3g} PB"


def human_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.3g} h" if s < 86400 * 3 else f"{s / 86400:.3g} days"


def available_memory(device: str = "cpu") -> float:
    """Bytes free now: CUDA's free memory on a GPU, MemAvailable (else total) for the CPU."""
    if device.startswith("cuda"):
        import torch

        try:
            return float(torch.cuda.mem_get_info(torch.device(device))[0])
        except (AssertionError, RuntimeError):  # no CUDA here: models.resolve_device refuses it in its own words
            return float("inf")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


_RATE: list[float] = []


def cpu_flops() -> float:
    """One core's matrix-multiply rate in FLOP/s per CPU-second: the best of five 10 ms bursts of 64x64 products
    (small enough that BLAS keeps them on one thread, whose spinning siblings would otherwise eat CPU time on a
    busy machine), timed in this process's CPU time, so other processes do not make it look slower."""
    if not _RATE:
        import numpy as np

        a = np.ones((64, 64), np.float32)
        b = np.ones((64, 64), np.float32)
        a @ b  # warm up
        rates = []
        for _ in range(5):
            start, n = time.process_time(), 0
            while time.process_time() - start < 0.01:
                a @ b
                n += 1
            rates.append(2 * 64**3 * n / (time.process_time() - start))
        _RATE.append(max(rates))
    return _RATE[0]


def check_budget(name: str, value, memory_bytes: float = 0.0, seconds: float | None = None, device: str = "cpu",
                 force: bool = False, limit_s: float = TIME_LIMIT_S) -> None:
    """Refuse work that needs more memory than ``device`` has, or more than ``limit_s`` (two hours) on the CPU,
    unless ``force``."""
    if force:
        return
    available = available_memory(device)
    if memory_bytes > MEMORY_SHARE * available:
        raise invalid(name, value, f"work that fits in memory: this needs about {human_bytes(memory_bytes)} (estimated) and "
                                   f"{device} has {human_bytes(available)} available; ask for less, or force it (CLI: --force) to try anyway")
    if seconds is not None and seconds > limit_s and not device.startswith(("cuda", "mps")):
        raise invalid(name, value, f"work under {human_seconds(limit_s)} here: this would take about {human_seconds(seconds)} "
                                   "on this CPU (estimated); ask for less, or force it (CLI: --force) to run it anyway")


# -- a generation's cost from the model's configs -----------------------------------------------
def _config(directory: Path | None, part: str) -> dict | None:
    path = directory / part / "config.json" if directory else None
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path and path.is_file() else None
    except (OSError, ValueError):
        return None


def _per_level(value, n: int) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * n


def unet_cost(config: dict, h: int, w: int, encoder_only: bool = False) -> tuple[float, float]:
    """(FLOPs, activation elements alive at once) of one UNet evaluation on one latent of h x w.

    ``encoder_only``: the down blocks and the middle block alone, what a ControlNet (a copy of them, read from
    its own config) runs; its activations are the residuals it hands the UNet."""
    channels = [int(c) for c in config["block_out_channels"]]
    levels = len(channels)
    per_block = _per_level(config.get("layers_per_block", 2), levels)
    depth = _per_level(config.get("transformer_layers_per_block", 1) or 1, levels)
    attention = ["CrossAttn" in t for t in config.get("down_block_types", ["CrossAttnDownBlock2D"] * levels)]
    flops = skips = widest = 0.0
    for i, c in enumerate(channels):
        t = max(1, h >> i) * max(1, w >> i)
        middle = 2 if i == levels - 1 else 0
        resnets = per_block[i] + middle if encoder_only else 2 * per_block[i] + 1 + middle  # down, up (one more), the middle block
        flops += resnets * 2 * (2 * 9 * c * c * t)
        skips += (per_block[i] + 1) * c * t
        if attention[i] or i == levels - 1:
            blocks = (resnets - 1) * depth[i]
            flops += blocks * (2 * t * c * c * 18 + 4 * t * t * c)  # projections, feed-forward; QK^T and AV
            widest = max(widest, 14.0 * c * t)  # input, q/k/v, the feed-forward's 8c
        widest = max(widest, 4.0 * c * t)
    return flops, skips + widest


def transformer_cost(config: dict, h: int, w: int) -> tuple[float, float]:
    """(FLOPs, activation elements) of one MMDiT (SD 3) evaluation on one latent of h x w."""
    width = int(config.get("num_attention_heads", 24)) * int(config.get("attention_head_dim", 64))
    patch = int(config.get("patch_size", 2))
    t = max(1, h // patch) * max(1, w // patch) + TEXT_TOKENS["sd3"]
    layers = int(config.get("num_layers", 24))
    return layers * (2 * t * width * width * 12 + 4 * t * t * width), 14.0 * width * t


def vae_decode_cost(config: dict, h: int, w: int) -> tuple[float, float]:
    """(FLOPs, activation elements) of decoding one latent of h x w to pixels."""
    channels = [int(c) for c in config["block_out_channels"]][::-1]  # the decoder runs from the narrowest grid up
    per_block = int(config.get("layers_per_block", 2)) + 1
    flops = widest = 0.0
    for j, c in enumerate(channels):
        t = (h << j) * (w << j)
        flops += per_block * 2 * (2 * 9 * c * c * t)
        widest = max(widest, 5.0 * c * t)
    t0 = h * w
    flops += 4 * t0 * t0 * channels[0] + 8 * t0 * channels[0] ** 2  # the middle block's attention
    return flops, widest


def _weight_bytes(directory: Path | None, file: Path | None) -> float:
    if file is not None:
        return float(file.stat().st_size)
    if directory is None:
        return 4.3e9  # an SD 1.x checkpoint in fp32
    return float(sum(p.stat().st_size for p in directory.glob("*/*") if p.suffix in (".safetensors", ".bin")))


def estimate_generation(source: Path | None, width: int, height: int, batch: int = 1, steps: int = 25,
                        guidance: float = 5.0, device: str = "cpu", bytes_per_value: int | None = None,
                        controlnets: Sequence[tuple[dict, float, float]] = ()) -> Cost:
    """The cost of ``batch`` images of ``width`` x ``height`` in ``steps`` steps on a model at ``source``
    (a pipeline directory, a checkpoint file, or None: read as SD 1.x), with ``controlnets`` as
    (config, weight bytes, share of the steps it acts in) beside the UNet."""
    directory = source if source is not None and source.is_dir() else None
    file = source if source is not None and source.is_file() else None
    vae = _config(directory, "vae") or SD1_VAE
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    h, w = max(1, height // factor), max(1, width // factor)
    transformer = _config(directory, "transformer")
    flops, elements = transformer_cost(transformer, h, w) if transformer else unet_cost(_config(directory, "unet") or SD1_UNET, h, w)
    for config, _, share in controlnets:
        net_flops, net_elements = unet_cost(config, h, w, encoder_only=True)
        flops, elements = flops + share * net_flops, elements + net_elements
    evaluations = 2 if guidance > 1 else 1  # classifier-free guidance runs the conditional and unconditional halves
    decode_flops, decode_elements = vae_decode_cost(vae, h, w)
    size = bytes_per_value or (2 if device.startswith(("cuda", "mps")) else 4)
    weights = _weight_bytes(directory, file) + sum(b for _, b, _ in controlnets)
    peak = weights + ACTIVATION_FACTOR * size * batch * max(evaluations * elements, decode_elements)
    total = steps * evaluations * batch * flops + batch * decode_flops
    seconds = None if device.startswith(("cuda", "mps")) else total / (EFFICIENCY * cpu_flops())
    return Cost(peak, weights, seconds, available_memory(device), device)


def check_generation(source: Path | None, width: int, height: int, batch: int = 1, steps: int = 25, guidance: float = 5.0,
                     device: str = "cpu", force: bool = False, name: str = "cost",
                     controlnets: Sequence[tuple[dict, float, float]] = ()) -> Cost:
    """:func:`estimate_generation`, refused in one line when it would not fit or not finish (unless ``force``)."""
    cost = estimate_generation(source, width, height, batch, steps, guidance, device, controlnets=controlnets)
    value = f"{width}x{height}, {batch} image{'s' if batch != 1 else ''}, {steps} steps"
    value += f", {len(controlnets)} ControlNet{'s' if len(controlnets) != 1 else ''}" if controlnets else ""
    check_budget(name, value, cost.peak_bytes, cost.seconds, device, force)
    return cost


def likely_device(device: str = "auto") -> str:
    """The device ``auto`` will pick, without importing torch when no GPU driver is present (a bad name refused)."""
    from .validation import Check, validate_params

    validate_params({"device": device}, {"device": [Check(lambda d: isinstance(d, str) and d.split(":")[0] in ("auto", "cpu", "cuda", "mps"),
                                                          "auto, cpu, cuda, cuda:N or mps")]})
    if device != "auto":
        return device
    if not Path("/proc/driver/nvidia/version").exists() and not os.environ.get("CUDA_VISIBLE_DEVICES") and os.uname().sysname != "Darwin":
        return "cpu"
    from .models import resolve_device

    return resolve_device(device)


def init_size(image) -> tuple[int, int] | None:
    """(width, height) of an init image given as a path (read from its header), PIL image or array."""
    if image is None:
        return None
    if isinstance(image, (str, os.PathLike)):
        from .images import open_image

        with open_image(image, "init") as opened:
            return opened.size
    if hasattr(image, "size") and not hasattr(image, "shape"):
        return tuple(image.size)
    return int(image.shape[1]), int(image.shape[0])


def check_spec(model, spec, device: str = "auto", force: bool = False, allow_pickle: bool = False, scale: float = 1.0) -> Cost:
    """A spec's generation on ``model`` (a name or path; None: a model sdlab cannot locate, read as SD 1.x), its defaults filled in as :func:`sdlab.generate.generate`
    will, estimated and refused before the model loads: the init image sets the size (extended by
    ``outpaint``), img2img runs ``steps x strength`` steps, CFG above 1 doubles every evaluation; ``scale``
    multiplies the size (a hires fix's second pass, its largest)."""
    from .models import MODEL_DEFAULTS, locate

    source, defaults = locate(model, allow_pickle=allow_pickle) if model is not None else (None, dict(MODEL_DEFAULTS))
    spec = spec.resolved(defaults)
    size = init_size(spec.init_image)
    if size is not None:
        left, top, right, bottom = spec.outpaint or (0, 0, 0, 0)
        width, height = size[0] + left + right, size[1] + top + bottom
    else:
        width, height = spec.width or 512, spec.height or 512
    width, height = int(width * scale), int(height * scale)
    steps = spec.steps or 25
    if spec.mode == "img2img":
        steps = max(1, int(steps * spec.strength))
    guidance = 5.0 if spec.guidance is None else spec.guidance
    nets = controlnet_costs(spec.control)
    if spec.guess_mode and guidance > 1:  # guess mode runs the ControlNets on CFG's conditional half only
        nets = [(config, weights, share / 2) for config, weights, share in nets]
    return check_generation(source, width, height, spec.batch_size, steps, guidance, likely_device(device), force, controlnets=nets)


def controlnet_costs(control) -> list[tuple[dict, float, float]]:
    """(config, weight bytes, share of the steps) of each of a spec's ControlNet units whose model can be read
    here: a loaded model, a directory or a shipped name (one sdlab cannot find is refused later, in its own words)."""
    from .control.unit import as_units
    from .errors import ModelNotFoundError

    found = []
    for unit in as_units(control):
        if unit.model is None:  # depth2img: the UNet reads the map itself
            continue
        if not isinstance(unit.model, (str, os.PathLike)):
            config = dict(unit.model.config)
            weights = float(sum(p.numel() * p.element_size() for p in unit.model.parameters()))
        else:
            from .control.nets import resolve, weights_file

            try:
                directory = Path(resolve(unit.model)[1])
            except ModelNotFoundError:
                continue
            config = _config(directory.parent, directory.name) or {}
            file = weights_file(directory)
            weights = float(file.stat().st_size) if file else 0.0
        if "block_out_channels" in config:  # SD 3 ControlNets (transformer blocks) are not estimated
            found.append((config, weights, float(unit.end) - float(unit.start)))
    return found


def check_pipeline(pipe, spec, force: bool = False, scale: float = 1.0) -> Cost:
    """:func:`check_spec` for a pipeline already loaded (a panel's): the configs where it came from, its device."""
    from .errors import ModelNotFoundError
    from .models import model_info

    device = str(getattr(pipe, "device", "cpu"))
    try:
        return check_spec(model_info(pipe).source, spec, device, force, scale=scale)
    except ModelNotFoundError:  # built in memory or from the hub: estimated as SD 1.x
        return check_spec(None, spec, device, force, scale=scale)


TRAINING_LIMIT_S = 24 * 3600.0  # training is long by nature: only a run that would not end today is refused


def training_seconds(unet_config: dict, h: int, w: int, batch: int, steps: int) -> float:
    """CPU seconds of ``steps`` UNet training steps at ``batch`` latents of h x w: forward and backward, about
    three forward passes each (the order of magnitude a step count is checked against)."""
    flops, _ = unet_cost(unet_config, h, w)
    return 3.0 * flops * batch * steps / (EFFICIENCY * cpu_flops())
