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
