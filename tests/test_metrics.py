"""sdlab.metrics against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sdlab.errors import ValidationError
from sdlab.metrics import all_metrics, bits_per_pixel, ms_ssim, mse, psnr, ssim


def test_psnr_of_a_constant_offset_is_the_closed_form():
    a = np.zeros((8, 8, 3), np.uint8)
    b = np.full((8, 8, 3), 10, np.uint8)
    assert mse(a, b) == 100.0
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))  # 28.1308 dB


def test_psnr_of_one_changed_pixel():
    a = np.zeros((4, 4), np.uint8)
    b = a.copy()
    b[1, 2] = 16  # squared error 256 over 16 pixels: MSE 16
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 16))


def test_psnr_of_identical_images_is_infinite_and_uint8_does_not_wrap():
    a = np.full((4, 4, 3), 200, np.uint8)
    assert psnr(a, a) == math.inf
    b = np.full((4, 4, 3), 10, np.uint8)  # 10 - 200 must not wrap around in uint8
    assert mse(b, a) == 190.0**2


def test_ssim_of_two_flat_images_is_the_luminance_term():
    a = np.full((16, 16, 3), 100, np.uint8)
    b = np.full((16, 16, 3), 110, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 110 + c1) / (100**2 + 110**2 + c1)  # variances are 0: contrast term is 1
    assert ssim(a, b) == pytest.approx(expected, rel=1e-9)
    assert ssim(a, a) == pytest.approx(1.0)


def test_ssim_falls_with_noise():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    noisy = np.clip(a + rng.normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    assert 0 < ssim(a, noisy) < 0.9


def test_ms_ssim_needs_161_pixels_and_is_one_on_identical_images():
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, (176, 176, 3)).astype(np.uint8)
    assert ms_ssim(big, big) == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(ms_ssim(big[:160], big[:160]))
    blurred = ((big.astype(np.int32) + np.roll(big, 1, axis=1)) // 2).astype(np.uint8)
    assert ms_ssim(big, blurred) < 1.0


def test_bits_per_pixel_matches_buhlmanns_rate():
    assert bits_per_pixel(5000, (512, 512, 3)) == pytest.approx(0.152587890625)


def test_mismatched_shapes_name_the_parameter():
    with pytest.raises(ValidationError, match="test: shape"):
        psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValidationError, match="shape"):
        bits_per_pixel(10, (0, 4))


def test_all_metrics_has_the_three_keys():
    a = np.zeros((16, 16, 3), np.uint8)
    out = all_metrics(a, a)
    assert set(out) == {"psnr", "ssim", "ms_ssim"} and math.isnan(out["ms_ssim"])
