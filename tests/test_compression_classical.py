"""Classical codecs: round trips, the budget search, and codecs missing at run time."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from sdlab.compression import BudgetTooSmall, Codec, get_codec, rd_curves
from sdlab.compression import classical
from sdlab.errors import CodecError, DependencyError, ValidationError
from sdlab.images import sample_photos


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return sample_photos(96, ("chelsea",))["chelsea"]


CLASSICAL = ["jpeg", "jpeg444", "webp", "avif", "jxl"]


@pytest.mark.parametrize("name", CLASSICAL)
def test_round_trip_decodes_the_same_pixels_twice(name, photo):
    codec = get_codec(name)
    if not codec.available:
        pytest.skip(codec.unavailable_reason())
    lo, hi = codec.quality_range
    data = codec.encode(photo, (lo + hi) // 2)
    first, second = codec.decode(data), codec.decode(bytes(data))
    assert first.shape == photo.shape and first.dtype == np.uint8
    assert np.array_equal(first, second)
    assert np.abs(first.astype(int) - photo).mean() < 20  # a real reconstruction, not noise


@pytest.mark.parametrize("name", CLASSICAL)
def test_budget_search_fits_and_the_next_quality_does_not(name, photo):
    codec = get_codec(name)
    if not codec.available:
        pytest.skip(codec.unavailable_reason())
    smallest = len(codec.encode(photo, codec.quality_range[0]))
    for budget in (smallest, smallest + 150, smallest * 2):
        enc = codec.encode_to_budget(photo, budget)
        assert enc.n_bytes <= budget
        assert enc.data == codec.encode(photo, enc.quality)
        if enc.quality < codec.quality_range[1]:
            assert len(codec.encode(photo, enc.quality + 1)) > budget
    with pytest.raises(BudgetTooSmall, match="max_bytes"):
        codec.encode_to_budget(photo, smallest - 1)


class Stepped(Codec):
    """A fake codec whose size is a known monotone function of quality."""

    name = "stepped"
    quality_range = (0, 100)

    def encode(self, image, quality):
        return bytes(10 + 3 * quality + quality // 7)

    def decode(self, data):
        return np.zeros((2, 2, 3), np.uint8)


@pytest.mark.parametrize("budget", [10, 11, 57, 200, 333, 10_000])
def test_budget_search_is_the_best_quality_that_fits(budget):
    codec = Stepped()
    best = max(q for q in range(101) if len(codec.encode(None, q)) <= budget)
    assert codec.encode_to_budget(None, budget).quality == best


def test_bad_parameters_name_themselves(photo):
    jpeg = get_codec("jpeg")
    with pytest.raises(ValidationError, match="quality"):
        jpeg.encode(photo, 0)
    with pytest.raises(ValidationError, match="max_bytes"):
        jpeg.encode_to_budget(photo, 0)
    with pytest.raises(ValidationError, match="codec: .gif. is not valid; valid: one of"):
        get_codec("gif")
    with pytest.raises(ValidationError, match="vae"):
        get_codec("vae")


@pytest.mark.parametrize("name", ["jpeg", "webp"])
def test_garbage_gives_a_codec_error(name):
    with pytest.raises(CodecError, match="not a decodable"):
        get_codec(name).decode(b"\x00garbage" * 10)


def test_missing_pillow_plugin_is_a_not_installed_row(monkeypatch, photo):
    real = classical.features.check
    monkeypatch.setattr(classical.features, "check", lambda f: False if f == "avif" else real(f))
    avif = get_codec("avif")
    assert not avif.available and "AVIF" in avif.unavailable_reason()
    with pytest.raises(DependencyError, match="not installed"):
        avif.encode_to_budget(photo, 5000)
    frame = rd_curves({"cat": photo}, ["jpeg", "avif"], [3000, 6000])
    assert len(frame) == 4
    missing = frame[frame["codec"] == "avif"]
    assert missing["status"].str.startswith("not installed").all() and missing["psnr"].isna().all()
    assert (frame[frame["codec"] == "jpeg"]["status"] == "ok").all()


def test_missing_jpeg_xl_libraries_are_a_not_installed_row(monkeypatch, photo):
    monkeypatch.setitem(sys.modules, "pillow_jxl", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "imagecodecs", None)
    jxl = get_codec("jxl")
    assert "pip install pillow-jxl-plugin" in jxl.unavailable_reason()
    frame = rd_curves({"cat": photo}, [jxl], [3000])
    assert frame.loc[0, "status"].startswith("not installed")
