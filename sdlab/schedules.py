"""Learning-rate schedules shared by every trainer here: a linear warm-up and a cosine decay.

Both return a factor of the base learning rate for a 0-based step, with diffusers' formulas
(``get_linear_schedule_with_warmup``'s ramp, ``get_cosine_schedule_with_warmup``'s half cosine).
"""
from __future__ import annotations

import math


def warmup(step: int, steps: int) -> float:
    """Linear warm-up: ``(step + 1) / steps``, capped at 1 (1 from the first step when ``steps`` is 0)."""
    return min(1.0, (step + 1) / max(steps, 1))


def cosine(step: int, steps: int, final: float = 0.0) -> float:
    """Cosine decay from 1 at step 0 to ``final`` at ``steps`` (held at ``final`` after)."""
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
