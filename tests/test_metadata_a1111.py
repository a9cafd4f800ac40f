"""sdlab's PNG text read the way AUTOMATIC1111 >= 1.9 reads it (REFERENCE.md: "Sampler and schedule type"),
and A1111's own forms read back by sdlab."""
import hashlib
import re

import numpy as np
import pytest
from PIL import Image

from sdlab.metadata import format_parameters, image_hash, same_image, spec_from_parameters
from sdlab.samplers import SAMPLERS
from sdlab.spec import GenerationSpec

# A1111's infotext rules: its key/value regex, and a missing "Schedule type" read as "Automatic", which resolves
# to Karras for DPM++ 2M, DPM2, DPM2 a, DPM++ SDE and to Exponential for DPM++ 2M SDE (the model's own otherwise).
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
AUTOMATIC = {"DPM++ 2M": "Karras", "DPM2": "Karras", "DPM2 a": "Karras", "DPM++ SDE": "Karras", "DPM++ 2M SDE": "Exponential"}
NO_SCHEDULE = {"UniPC", "DDIM", "PLMS", "LCM"}


def a1111_reads(text: str) -> tuple[str, str]:
    """(sampler, schedule) that A1111 would run for this infotext."""
    pairs = {k.strip(): v.strip() for k, v in RE_PARAM.findall(text.strip().split("\n")[-1])}
    sampler = pairs["Sampler"]
    schedule = pairs.get("Schedule type", "Automatic")
    if schedule == "Automatic":
        schedule = AUTOMATIC.get(sampler, "Uniform")
    return sampler, schedule


@pytest.mark.parametrize("name", [n for n in SAMPLERS])
def test_a1111_runs_the_sampler_and_schedule_sdlab_ran(name):
    text = format_parameters(GenerationSpec("a cat", seed=1, steps=20, guidance=7.0, sampler=name, width=512, height=512))
    sampler, schedule = a1111_reads(text)
    base = name.removesuffix(" Karras")
    assert sampler == base
    if base in NO_SCHEDULE and not name.endswith("Karras"):
        assert "Schedule type" not in text  # A1111 runs these without a schedule
    else:
        assert schedule == ("Karras" if name.endswith(" Karras") else "Uniform")
    assert spec_from_parameters(text).sampler == name  # and sdlab reads its own text back


@pytest.mark.parametrize("written,expected", [
    ("Sampler: DPM++ 2M", "DPM++ 2M Karras"),  # bare name = Automatic = Karras in A1111 >= 1.9
    ("Sampler: DPM++ 2M, Schedule type: Automatic", "DPM++ 2M Karras"),
    ("Sampler: DPM++ 2M, Schedule type: Uniform", "DPM++ 2M"),
    ("Sampler: Euler a", "Euler a"),
    ("Sampler: Euler, Schedule type: Karras", "Euler Karras"),
    ("Sampler: DPM++ 2M Karras", "DPM++ 2M Karras"),  # A1111 < 1.9 wrote the schedule into the name
])
def test_a1111_forms_are_read_as_a1111_runs_them(written, expected):
    spec = spec_from_parameters(f"a cat\nSteps: 20, {written}, CFG scale: 7, Seed: 1, Size: 512x512")
    assert spec.sampler == expected


def test_a_schedule_sdlab_cannot_run_is_kept_not_dropped():
    spec = spec_from_parameters("a cat\nSteps: 20, Sampler: DPM++ 2M SDE, CFG scale: 7, Seed: 1, Size: 512x512")
    assert spec.sampler is None  # Automatic means Exponential here
    assert spec.extra["Sampler"] == "DPM++ 2M SDE"
    spec = spec_from_parameters("a cat\nSteps: 20, Sampler: Euler, Schedule type: SGM Uniform, CFG scale: 7, Seed: 1, Size: 8x8")
    assert spec.sampler is None and spec.extra["Schedule type"] == "SGM Uniform"


def test_cfg_is_written_as_a1111_writes_it():
    for value, text in ((5.000000000000001, "CFG scale: 5,"), (7.5, "CFG scale: 7.5,"), (7.0, "CFG scale: 7,")):
        assert text in format_parameters(GenerationSpec("x", seed=1, guidance=value, steps=2))


def test_init_image_hash_is_a1111s_md5_and_the_old_hash_still_matches():
    pixels = np.random.default_rng(0).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    assert image_hash(image) == hashlib.md5(image.tobytes()).hexdigest()  # A1111: hashlib.md5(img.tobytes())
    old = hashlib.sha256(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()[:10]
    assert same_image(image, image_hash(image)) and same_image(image, old)
    assert not same_image(Image.fromarray(255 - pixels), image_hash(image))
    text = format_parameters(GenerationSpec("x", seed=1, steps=2, init_image=image, strength=0.5))
    assert f"Init image hash: {hashlib.md5(image.tobytes()).hexdigest()}" in text
