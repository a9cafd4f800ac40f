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


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory):
    """``family_dir(name) -> Path``: a tiny random pipeline directory of one architecture family.

    Names: ``sd1``, ``sd2`` (v-prediction), ``sd2-inpaint`` (9-channel UNet), ``sdxl``, ``sd3``,
    ``sd2-depth`` (5-channel depth2img UNet, no depth estimator)
    (see tests/families.py). Each is built once per session on first use (well under a second,
    about 2 MB) and loads with ``sdlab.models.load_pipeline`` or ``DiffusionPipeline.from_pretrained``.
    """
    from families import make_family

    root = tmp_path_factory.mktemp("families")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = make_family(name, root / name)
        return built[name]

    return get


@pytest.fixture(scope="session")
def sd1_dir(family_dir) -> Path:
    return family_dir("sd1")


@pytest.fixture(scope="session")
def sd2_dir(family_dir) -> Path:
    return family_dir("sd2")


@pytest.fixture(scope="session")
def sd2_inpaint_dir(family_dir) -> Path:
    return family_dir("sd2-inpaint")


@pytest.fixture(scope="session")
def sdxl_dir(family_dir) -> Path:
    return family_dir("sdxl")


@pytest.fixture(scope="session")
def sd3_dir(family_dir) -> Path:
    return family_dir("sd3")


@pytest.fixture(scope="module")
def loaded(family_dir):
    """``loaded(name) -> (pipeline, directory)``: a family's tiny pipeline, loaded once per test module
    (each module gets its own, so a test that checks a pipeline is left unchanged sees only its module's calls)."""
    from sdlab.models import load_pipeline

    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = (load_pipeline(str(family_dir(name)), device="cpu"), family_dir(name))
        return cache[name]

    return get

