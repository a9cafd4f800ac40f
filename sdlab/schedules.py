"""Learning-rate schedules shared by every trainer here: a linear warm-up and a cosine decay.

Both return a factor of the base learning rate for a 0-based step, with diffusers' formulas
(``get_linear_schedule_with_warmup``'s ramp, ``get_cosine_schedule_with_warmup``'s half cosine).
"""
from __future__ import annotations

import math

LR_SCHEDULERS = ("constant", "cosine")  # what follows the warm-up (diffusers' names)


def warmup(step: int, steps: int) -> float:
    """Linear warm-up: ``(step + 1) / steps``, capped at 1 (1 from the first step when ``steps`` is 0)."""
    return min(1.0, (step + 1) / max(steps, 1))


def cosine(step: int, steps: int, final: float = 0.0) -> float:
    """Cosine decay from 1 at step 0 to ``final`` at ``steps`` (held at ``final`` after)."""
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


def lr_factor(step: int, steps: int, warmup_steps: int, scheduler: str = "constant") -> float:
    """The factor of the base lr at 0-based ``step`` of ``steps``: the warm-up, then constant or a cosine to 0."""
    if step < warmup_steps:
        return warmup(step, warmup_steps)
    if scheduler == "cosine":
        return cosine(step - warmup_steps, max(1, steps - warmup_steps))
    return 1.0
