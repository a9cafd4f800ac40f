"""Shared by the benchmark scripts: timing, and the target table every script prints."""
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
