"""Stable Signature: augmentations, the p-value, training/resume/export on a tiny pipeline, and the shipped mark."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdlab.errors import Cancelled, ValidationError
from sdlab.watermark import signature as sig


def shapes(n: int, seed: int) -> np.ndarray:
    """The shapes world's images: the data the CLI and the panel train the signature on."""
    from sdlab.mini import world

    return world.make_dataset(n, seed=seed)[0]


TINY = dict(extractor_steps=2, clean_steps=0, steps=2, batch=4, n_images=16, n_photos=4, n_bits=8, extractor_width=8, checkpoint_minutes=100)


def ramp(n: int = 2) -> torch.Tensor:
    """A smooth, textured batch in [-1, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    image = torch.stack([torch.sin(3 * xx), torch.cos(4 * yy), xx * yy]) * 0.8
    return image.expand(n, 3, 32, 32).clone()


def test_binomial_p_value_by_hand():
    assert sig.binomial_p_value(4, 4) == 1 / 16
    assert sig.binomial_p_value(3, 4) == 5 / 16
    assert sig.binomial_p_value(0, 4) == 1.0
    assert math.isclose(sig.binomial_p_value(30, 32), (1 + 32 + 496) / 2**32)


def test_augmentations_act_as_named():
    x, rng = ramp(), np.random.default_rng(0)
    assert torch.equal(sig.augment(x, "none", rng), x)
    for name in sig.AUGMENTATIONS:
        y = sig.augment(x, name, np.random.default_rng(1))
        assert y.shape == x.shape, name  # crop and resize come back at the input size
        if name != "none":
            assert not torch.allclose(y, x, atol=1e-3), name
    blurred = sig.augment(x, "blur", rng)
    assert blurred.diff(dim=-1).abs().mean() < x.diff(dim=-1).abs().mean()  # blur smooths
    rotated = sig.augment(x, "rotate", np.random.default_rng(3))
    assert torch.allclose(rotated[..., 16, 16], x[..., 16, 16], atol=0.1)  # the centre stays put
    with pytest.raises(ValidationError, match="augmentation: 'shear' is not valid; valid: one of none, jpeg"):
        sig.augment(x, "shear", rng)


def test_jpeg_passes_gradients_straight_through():
    x = ramp(1).requires_grad_(True)
    y = sig.augment(x, "jpeg", np.random.default_rng(0))
    assert 0 < float((y - x).abs().max()) < 0.5  # the real codec changed it
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize("field, value, message", [
    ("n_bits", 4, "n_bits: 4 is not valid; valid: a whole number >= 8"), ("lr", 0.0, "lr: 0.0 is not valid; valid: a number > 0"),
    ("decoder_lr", -1.0, "decoder_lr: -1.0 is not valid; valid: a number > 0"),
    ("image_weight", -1.0, "image_weight: -1.0 is not valid; valid: a number >= 0"),
    ("key_seed", -1, "key_seed: -1 is not valid; valid: a whole number >= 0"),
    ("faint_steps", -1, "faint_steps: -1 is not valid; valid: a whole number >= 0"),
    ("augmentations", ("jpeg", "warp"), r"augmentations: \('jpeg', 'warp'\) is not valid; valid: one or more of none, jpeg"),
    ("extractor_width", 12, "extractor_width: 12 is not valid; valid: a whole number >= 8 and a multiple of 8"),
])
def test_config_names_the_bad_field(field, value, message):
    with pytest.raises(ValidationError, match=message):
        sig.SignatureConfig(**{field: value})


def test_key_is_fixed_by_its_seed():
    a, b = sig.SignatureConfig(key_seed=1).key(), sig.SignatureConfig(key_seed=2).key()
    assert a.shape == (32,) and set(np.unique(a)) <= {0, 1}
    assert np.array_equal(a, sig.SignatureConfig(key_seed=1).key()) and not np.array_equal(a, b)


@pytest.fixture(scope="module")
def tiny_pipe(tiny_pipeline_dir):
    from sdlab.models import load_pipeline

    return load_pipeline(tiny_pipeline_dir)


def test_train_cancel_resume_export_and_load(tiny_pipe, tmp_path):
    cfg = sig.SignatureConfig(**TINY)
    original = {k: v.clone() for k, v in tiny_pipe.vae.state_dict().items()}

    def cancel_at_2(step, total):
        if step == 2:
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        sig.train(tiny_pipe, tmp_path, cfg, progress=False, dataset=shapes, callback=cancel_at_2)
    assert torch.load(tmp_path / sig.CHECKPOINT, weights_only=True)["step"] == 2
    seen = []
    sig.train(tiny_pipe, tmp_path, cfg, progress=False, dataset=shapes, callback=lambda step, total: seen.append(step))
    assert seen == [3, 4]  # resumed after step 2 (the last of stage 1), then stage 2
    assert all(torch.equal(v, original[k]) for k, v in tiny_pipe.vae.state_dict().items())  # the pipeline's own VAE is untouched

    scheme = sig.StableSignature(tiny_pipe, tmp_path)
    assert np.array_equal(scheme.key, cfg.key())
    marked, base = scheme.marked_vae.state_dict(), tiny_pipe.vae.state_dict()
    assert any(not torch.equal(marked[k], base[k]) for k in marked if k.startswith("decoder."))
    assert all(torch.equal(marked[k], base[k]) for k in marked if k.startswith("encoder."))
    found = scheme.detect(np.zeros((40, 24, 3), np.uint8))  # any size is read
    assert found["bits_total"] == 8 and 0 <= found["bits_matched"] <= 8
    assert found["p_value"] == sig.binomial_p_value(found["bits_matched"], 8)

    with pytest.raises(ValidationError, match="another configuration"):
        sig.train(tiny_pipe, tmp_path, sig.SignatureConfig(**{**TINY, "key_seed": 5}), progress=False, dataset=shapes)
    with pytest.raises(ValidationError, match=r"image: 'an array of shape \(8, 8\)' is not valid; valid: an RGB array"):
        scheme.detect(np.zeros((8, 8), np.uint8))


def test_extractor_from_skips_stage_1_and_reads_with_that_extractor(tiny_pipe, tmp_path):
    from safetensors.torch import load_file

    first = sig.train(tiny_pipe, tmp_path / "first", sig.SignatureConfig(**TINY), progress=False, dataset=shapes)
    seen = []
    cfg = sig.SignatureConfig(**{**TINY, "key_seed": 7})
    second = sig.train(tiny_pipe, tmp_path / "second", cfg, progress=False, dataset=shapes, callback=lambda step, total: seen.append(step),
                       extractor_from=first)
    assert seen == [3, 4]  # stage 2's two steps only
    theirs, ours = load_file(str(first / sig.EXTRACTOR)), load_file(str(second / sig.EXTRACTOR))
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs)
    stages = [json.loads(line)["stage"] for line in (second / "train_log.jsonl").read_text().splitlines()]
    assert stages == ["signature-2"]  # its first step; stage 1 would have logged step 0
    meta = json.loads((second / sig.CONFIG).read_text())
    assert meta["extractor_from"]["directory"] == str(first) and meta["key"] == cfg.key().tolist()
    assert not np.array_equal(sig.StableSignature(tiny_pipe, second).key, sig.StableSignature(tiny_pipe, first).key)
    # a checkpoint made from one extractor does not resume as a run of its own
    with pytest.raises(ValidationError, match="another configuration"):
        sig.train(tiny_pipe, tmp_path / "second", cfg, progress=False, dataset=shapes)
    with pytest.raises(ValidationError, match="extractor_from: .* has n_bits 8, this configuration 16"):
        sig.train(tiny_pipe, tmp_path / "third", sig.SignatureConfig(**{**TINY, "n_bits": 16}), progress=False, dataset=shapes, extractor_from=first)


def test_missing_signature_says_how_to_make_one(tiny_pipe, tmp_path):
    from sdlab.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="signature train"):
        sig.StableSignature(tiny_pipe, tmp_path / "nothing")
    with pytest.raises(ModelNotFoundError, match="extractor_from: no trained signature at"):
        sig.train(tiny_pipe, tmp_path / "run", sig.SignatureConfig(**TINY), progress=False, dataset=shapes, extractor_from=tmp_path / "nothing")
    assert not (tmp_path / "run").exists()  # refused before anything was written
    with pytest.raises(ValidationError, match="dataset: None is not valid; valid: a function dataset"):
        sig.train(tiny_pipe, tmp_path / "run", sig.SignatureConfig(**TINY), progress=False, dataset=None)
    with pytest.raises(ValidationError, match=r"dataset: 'images of shape \(16, 8, 8\) and type uint8' is not valid"):
        sig.train(tiny_pipe, tmp_path / "run", sig.SignatureConfig(**TINY), progress=False,
                  dataset=lambda n, seed: np.zeros((n, 8, 8), np.uint8))


# -- the shipped signature on the shipped model ----------------------------------------------------------
@pytest.fixture(scope="module")
def shipped():
    from sdlab.models import load_pipeline

    if not (sig.SHIPPED_SIGNATURE / sig.CONFIG).is_file():
        pytest.skip("no shipped Stable Signature in this checkout")
    return sig.StableSignature(load_pipeline("shapes-world"))


@pytest.mark.slow
def test_shipped_signature_marks_and_only_marks(shipped):
    from sdlab.metrics import psnr
    from sdlab.watermark import attacks

    pairs = [shipped.pair(seed, str(seed)) for seed in range(6)]
    assert all(shipped.detect(marked)["detected"] for _, marked in pairs)
    assert not any(shipped.detect(clean)["detected"] for clean, _ in pairs)
    db = [psnr(clean, marked) for clean, marked in pairs]
    assert np.mean(db) > 26 and min(db) > 23  # shipped: 28.3 dB mean, 26.2 min over 64 seeds
    survived = [shipped.detect(attacks.apply(marked, "jpeg", 70))["detected"] for _, marked in pairs]
    assert sum(survived) >= 4  # shipped: 88 % of 16 seeds at JPEG q70
    erased = [shipped.detect(attacks.apply(marked, "rotate", 10))["bit_accuracy"] for _, marked in pairs]
    assert np.mean(erased) > 0.7  # rotation, which erases dwtDct, leaves most bits (shipped: 0.78)
    measured = json.loads((sig.SHIPPED_SIGNATURE / sig.CONFIG).read_text())["measured"]
    assert measured["tpr"] >= 0.95 and measured["fpr"] <= 0.02 and measured["photo_fpr"] <= 0.05  # shipped: 0.97, 0, 0


def test_signature_cli_detects_a_marked_png(shipped, tmp_path, capsys):
    from sdlab.cli import main

    assert main(["watermark", "signature", "generate", "a red circle", "--seeds", "1", "--out", str(tmp_path)]) == 0
    assert main(["watermark", "signature", "generate", "a red circle", "--seeds", "1", "--clean", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["watermark", "signature", "detect", str(tmp_path / "marked_0000.png"), str(tmp_path / "clean_0000.png"), "--json"]) == 0
    marked, clean = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert marked["detected"] and not clean["detected"]
    assert marked["bits_total"] == 32 and marked["path"].endswith("marked_0000.png")


def test_panel_adds_the_signature_row(shipped):
    from sdlab.widgets.watermark import WatermarkPanel

    panel = WatermarkPanel(signature=shipped)
    panel.upscale.value = True  # 64x64 images are under the post-hoc library's minimum
    panel.load(shipped.generate(1))
    assert panel.signature_result["detected"] and "stable-signature" in panel.table.value
    panel.load(shipped.generate(1, marked=False))
    assert not panel.signature_result["detected"]


@pytest.mark.slow
def test_cli_battery_runs_the_signature(shipped, tmp_path, capsys):
    import pandas as pd

    from sdlab.cli import main

    assert main(["watermark", "battery", "--methods", "stable-signature", "--attacks", "jpeg", "--out", str(tmp_path)]) == 0
    rows = pd.read_parquet(tmp_path / "rows.parquet")
    assert set(rows.method) == {"stable-signature"} and set(rows.attack) == {"none", "jpeg"}
    unattacked = rows[rows.attack == "none"]
    assert len(unattacked) == 8  # one generated pair per default image name
    # p <= 1 %: no clean one, and the marked ones at the shipped TPR (0.97 over 64 seeds; 7 of these 8 here)
    assert (unattacked.score >= 2).sum() >= 7 and (unattacked.clean_score < 2).all()
    assert unattacked.bit_accuracy.mean() > 0.85 > 0.6 > unattacked.clean_bit_accuracy.mean()
    assert "stable-signature" in capsys.readouterr().out


def test_train_panel_trains_measures_and_shows(tiny_pipeline_dir, tmp_path):
    from sdlab.widgets.signature import SignatureTrainPanel

    fixed = {k: v for k, v in TINY.items() if k not in ("extractor_steps", "steps", "n_bits")}
    panel = SignatureTrainPanel(model=str(tiny_pipeline_dir), out_dir=str(tmp_path / "sig"), **fixed)
    panel.extractor_steps.value, panel.steps.value, panel.n_bits.value, panel.measure_images.value = 2, 2, 8, 2
    panel.start(background=False)
    assert panel.last_error is None and panel.progress.value == panel.progress.max == 4
    assert panel.loss_plot.value[:4] == b"\x89PNG" and panel.pair.value[:4] == b"\x89PNG"
    assert panel.figures["n_images"] == 2 and 0 <= panel.figures["tpr"] <= 1 and "psnr_db" in panel.table.value
    saved = json.loads((tmp_path / "sig" / sig.CONFIG).read_text())
    assert saved["config"]["n_bits"] == 8 and saved["measured"] == panel.figures
    panel.out_dir.value, panel.extractor_from.value = str(tmp_path / "again"), str(tmp_path / "sig")
    panel.start(background=False)  # reuses that extractor: stage 2 only
    assert panel.last_error is None and panel.progress.value == panel.progress.max == 4
    assert json.loads((tmp_path / "again" / sig.CONFIG).read_text())["extractor_from"]["directory"] == str(tmp_path / "sig")
    panel.image_weight.value = -1.0
    panel.start(background=False)
    assert panel.last_error.startswith("image_weight: -1.0 is not valid; valid: a number >= 0")
