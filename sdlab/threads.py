"""How many threads torch uses on a CPU: one for small models, unless the user says otherwise.

The shapes world's UNet (and any model of that size) is bound by per-layer overhead, not
arithmetic: two threads barely help on an idle CPU, and on a CPU shared with a browser or
another kernel torch's threads oversubscribe the cores and spin, so an image takes tens of
times longer (``benchmarks/bench_cold_start.py --only threads`` measures both cases). One
thread degrades gracefully instead. A fixed count also makes images the same on every
laptop of a class: torch's reductions sum per thread, so another count can move a pixel by
one level. Large models (real Stable Diffusion on a CPU) keep torch's own choice.

``SDLAB_THREADS``: ``auto`` (the default: the rule above), ``torch`` (never change torch's
setting), or a number of threads for every model.
"""
from __future__ import annotations

import os

from .validation import invalid

SMALL_MODEL_PARAMETERS = 100_000_000  # a denoiser below this many parameters runs on one CPU thread


def policy_threads(parameters: int, setting: str | None = None) -> int | None:
    """The thread count for a CPU model whose denoiser has ``parameters`` weights (None: leave torch's)."""
    setting = (os.environ.get("SDLAB_THREADS", "auto") if setting is None else setting).strip().lower()
    if setting == "torch":
        return None
    if setting.isdigit() and int(setting) >= 1:
        return int(setting)
    if setting != "auto":
        raise invalid("SDLAB_THREADS", setting, "auto, torch, or a whole number >= 1")
    return 1 if parameters < SMALL_MODEL_PARAMETERS else None


def apply_thread_policy(pipe) -> int:
    """Set torch's CPU thread count for ``pipe`` by :func:`policy_threads` (process-wide, as torch's setting is);
    a pipeline on a GPU changes nothing. Returns the count torch now uses."""
    import torch

    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if denoiser is not None and getattr(pipe, "device", torch.device("cpu")).type == "cpu":
        threads = policy_threads(sum(p.numel() for p in denoiser.parameters()))
        if threads is not None and threads != torch.get_num_threads():
            torch.set_num_threads(threads)
    return torch.get_num_threads()
