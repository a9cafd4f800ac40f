"""Shared by the benchmark scripts: timing, the target table every script prints, and a LoRA file applied as plain diffusers does."""
from __future__ import annotations

import time
from typing import Callable


def best_of(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Fastest wall time of ``repeat`` runs in seconds (the least disturbed by other load)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def report(rows: list[tuple[str, float, str, bool]]) -> None:
    """Print measured figures beside their targets: (what, value, target text, met)."""
    width = max(len(r[0]) for r in rows)
    for what, value, target, met in rows:
        print(f"{what:<{width}}  {value:10.4g}   target {target:<14} {'PASS' if met else 'MISS'}")


def with_lora_file(pipe, path: str, strength: float = 1.0):
    """A new SD 1.x pipeline sharing ``pipe``'s parts, its UNet a copy carrying the LoRA file at ``strength``, loaded
    by plain diffusers' ``load_lora_weights`` (the file's users' loader, not sdlab's); ``pipe`` is not changed."""
    import copy

    from diffusers import StableDiffusionPipeline

    from sdlab.models import rebuild_pipeline

    plain = StableDiffusionPipeline(**{**pipe.components, "unet": copy.deepcopy(pipe.unet)})
    plain.load_lora_weights(path, adapter_name="probe")
    plain.set_adapters(["probe"], [strength])
    return rebuild_pipeline(pipe, unet=plain.unet)
