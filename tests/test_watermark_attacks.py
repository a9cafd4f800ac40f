"""Each attack changes the image the way its strength says."""
from __future__ import annotations

import numpy as np
import pytest

from sdlab.errors import ValidationError
from sdlab.images import sample_photos
from sdlab.watermark import ATTACKS, attack, chain
from sdlab.watermark.attacks import encode


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return sample_photos(256, ("astronaut",))["astronaut"]


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


@pytest.mark.parametrize("name", [n for n, a in ATTACKS.items() if a.identity is not None and a.needs is None])
def test_identity_strength_is_identity(photo, name):
    assert np.array_equal(attack(photo, name, ATTACKS[name].identity), photo)


@pytest.mark.parametrize("name", [n for n, a in ATTACKS.items() if a.needs is None and n != "none"])
def test_stronger_changes_more(photo, name):
    """Mild to strong, the attacked image moves further from the original (crop: gets smaller)."""
    outs = [attack(photo, name, s, seed=3) for s in ATTACKS[name].strengths]
    for out in outs:
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    if name in ("crop", "combo_geo"):  # these make the image smaller
        sides = [o.shape[0] for o in outs]
        assert sides == ([230, 192, 128] if name == "crop" else [243, 230, 205])
        return
    diffs = [_diff(o, photo) for o in outs]
    assert all(d > 0 for d in diffs)
    assert diffs == sorted(diffs), diffs


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_lossy_size_falls_with_quality(photo, fmt):
    sizes = [len(encode(photo, fmt, q)) for q in (95, 75, 50, 20)]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 1.5 * sizes[-1]


def test_specific_geometry(photo):
    assert attack(photo, "crop", 0.5).shape == (128, 128, 3)
    assert attack(photo, "resize", 0.5).shape == photo.shape
    rotated = attack(photo, "rotate", 45)
    assert rotated.shape == photo.shape and (rotated[0, 0] == 0).all()  # corners filled black
    assert np.array_equal(attack(photo, "rotate", 360 * 0), photo)
    erased = attack(photo, "erase", 0.25, seed=1)
    assert 0.2 < (erased == 128).all(axis=2).mean() < 0.3
    bright = attack(photo, "brightness", 1.5)
    assert bright.mean() > photo.mean() + 20
    low = attack(photo, "contrast", 0.5)
    assert low.std() < 0.6 * photo.std()
    assert attack(photo, "blur", 2.0).std() < photo.std()
    noisy = attack(photo, "noise", 10, seed=0).astype(int) - photo
    assert 7 < noisy.std() < 11  # clipping at 0/255 trims a little


def test_random_attacks_repeat_with_seed(photo):
    for name in ("erase", "noise", "combo_degrade"):
        assert np.array_equal(attack(photo, name, ATTACKS[name].strengths[1], seed=5),
                              attack(photo, name, ATTACKS[name].strengths[1], seed=5))


def test_chain_and_errors(photo):
    out = chain(photo, [("jpeg", 80), ("rotate", 0), ("crop", 0.5)])
    assert out.shape == (128, 128, 3)
    with pytest.raises(ValidationError, match="attacks: 'sharpen' is not valid; valid: one of none, jpeg"):
        attack(photo, "sharpen", 1)
    with pytest.raises(ValidationError, match=r"strength: 150 is not valid; valid: a number in \[1, 100\] \(jpeg\'s quality\)"):
        attack(photo, "jpeg", 150)
    with pytest.raises(ValidationError, match="vae needs a diffusers AutoencoderKL"):
        attack(photo, "vae", 1)


def test_vae_roundtrip_with_any_autoencoder(photo):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=2).eval()
    out = attack(photo[:64, :64], "vae", 1, vae=vae)
    assert out.shape == (64, 64, 3) and _diff(out, photo[:64, :64]) > 5
