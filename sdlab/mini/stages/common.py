"""What every training stage shares: per-step seeded draws and checkpoint files (schedules: :mod:`sdlab.schedules`).

Batches, noise and timesteps are drawn from a generator seeded by (seed, stage,
step), so a resumed run draws what the uninterrupted run would have drawn.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ...io import atomic_path

# Each stage draws from its own stream: (seed, stage, step) seeds the generator.
VAE_STAGE, UNET_STAGE, DECODER_STAGE, TEXT_STAGE = 1, 2, 3, 4


def step_generator(seed: int, stage: int, step: int) -> torch.Generator:
    """The generator for one step of one stage: the same (seed, stage, step) draws the same batch."""
    return torch.Generator().manual_seed(seed * 1_000_003 + stage * 100_003 + step)


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` with ``torch.save``, atomically (a kill mid-write leaves the previous checkpoint)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
