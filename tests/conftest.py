"""Shared fixtures. Tests that need ../shared skip with a reason when it is absent (a user's clone)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LAION_SAMPLE = SHARED / "data" / "laion_sample" / "laion_sample_10k.parquet"


@pytest.fixture
def laion_sample() -> Path:
    """Path to the real 10k-row LAION sample in ../shared (skips cleanly when absent)."""
    if not LAION_SAMPLE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{LAION_SAMPLE} is missing, but CI must have ../shared")
        pytest.skip(f"needs {LAION_SAMPLE} (present in CI; a fresh clone has no ../shared)")
    return LAION_SAMPLE


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """A shapes-world pipeline trained for a few steps from scratch (weights meaningless, format real)."""
    from sdlab.mini.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny-run")
    return train(out, TrainConfig(n_images=96, vae_steps=2, decoder_steps=2, unet_steps=2, text_steps=2, vae_batch=4, decoder_batch=4, unet_batch=4, text_batch=4), progress=False)
