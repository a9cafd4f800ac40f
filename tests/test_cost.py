"""The cost guard (sdlab.cost), output checks (sdlab.io.check_output) and model location (models.locate):
what a command refuses before it loads anything, and that the estimate scales as the work does."""
from __future__ import annotations

import pytest
from PIL import Image, PngImagePlugin

from sdlab import cost
from sdlab.errors import ModelNotFoundError, UnsafeCheckpointError, ValidationError
from sdlab.io import check_output
from sdlab.models import SHIPPED_DIR, locate


@pytest.fixture
def machine(monkeypatch):
    """A machine with 8 GB free and a 10 GFLOP/s matrix multiply, whatever this one has now."""
    monkeypatch.setattr(cost, "available_memory", lambda device="cpu": 8e9)
    monkeypatch.setattr(cost, "cpu_flops", lambda: 1e10)


def test_activations_scale_with_the_batch_and_time_with_the_steps(machine):
    one = cost.estimate_generation(SHIPPED_DIR, 64, 64, batch=1, steps=10)
    four = cost.estimate_generation(SHIPPED_DIR, 64, 64, batch=4, steps=10)
    assert one.weight_bytes == four.weight_bytes == sum(p.stat().st_size for p in SHIPPED_DIR.glob("*/*.safetensors"))
    assert four.peak_bytes - four.weight_bytes == pytest.approx(4 * (one.peak_bytes - one.weight_bytes))
    decode = cost.estimate_generation(SHIPPED_DIR, 64, 64, batch=1, steps=0).seconds
    twenty = cost.estimate_generation(SHIPPED_DIR, 64, 64, batch=1, steps=20).seconds
    assert twenty - decode == pytest.approx(2 * (one.seconds - decode))
    no_cfg = cost.estimate_generation(SHIPPED_DIR, 64, 64, batch=1, steps=10, guidance=1.0).seconds
    assert one.seconds - decode == pytest.approx(2 * (no_cfg - decode))  # CFG runs the UNet twice


def test_attention_makes_big_sizes_cost_more_than_their_pixels(machine):
    small = cost.estimate_generation(SHIPPED_DIR, 256, 256, steps=25).seconds
    big = cost.estimate_generation(SHIPPED_DIR, 1024, 1024, steps=25).seconds
    assert big > 16 * small  # 16x the pixels, and self-attention's quadratic term on top


def test_a_gpu_estimate_has_memory_but_no_cpu_time(monkeypatch):
    monkeypatch.setattr(cost, "available_memory", lambda device="cpu": 8e9)
    estimate = cost.estimate_generation(None, 512, 512, device="cuda")
    assert estimate.seconds is None and estimate.weight_bytes == 4.3e9  # an unknown model reads as SD 1.x


def test_refusals_give_the_estimate_and_the_way_out(machine):
    with pytest.raises(ValidationError, match=r"^cost: '4096x4096, 2 images, 25 steps' is not valid; .*needs about .* GB .*8 GB available.*--force"):
        cost.check_generation(SHIPPED_DIR, 4096, 4096, batch=2, steps=25)
    with pytest.raises(ValidationError, match=r"^cost: '64x64, 1 image, 1000000 steps' is not valid; valid: work under 2 h here: .*--force"):
        cost.check_generation(SHIPPED_DIR, 64, 64, steps=1_000_000)
    assert cost.check_generation(SHIPPED_DIR, 4096, 4096, batch=2, force=True).peak_bytes > 8e9  # forced: estimated, not refused
    assert cost.check_generation(SHIPPED_DIR, 64, 64, steps=25).seconds < 60
    with pytest.raises(ValidationError, match=r"^n: 100 is not valid; valid: work that fits in memory"):
        cost.check_budget("n", 100, memory_bytes=9e9)


def test_check_spec_reads_the_model_defaults_and_the_init_image(machine, tmp_path):
    from sdlab.spec import GenerationSpec

    assert cost.check_spec("shapes-world", GenerationSpec("a")).peak_bytes == cost.estimate_generation(SHIPPED_DIR, 64, 64, steps=25).peak_bytes
    Image.new("RGB", (4096, 4096)).save(tmp_path / "big.png")
    with pytest.raises(ValidationError, match="4096x4096"):  # the init image sets the size
        cost.check_spec("shapes-world", GenerationSpec("a", init_image=str(tmp_path / "big.png"), strength=1.0, batch_size=2))
    with pytest.raises(ValidationError, match="device: 'tpu' is not valid"):
        cost.check_spec("shapes-world", GenerationSpec("a"), device="tpu")


def test_a_controlnet_adds_its_encoder_for_the_steps_it_acts(machine):
    """The shipped edge ControlNet is the UNet's encoder and middle block: estimated at 1.39x an uncontrolled image
    (bench_control.py's measured ratio is in the net's sdlab.json), its file in the weights, half the extra time with a half window."""
    import numpy as np
    import torch

    from sdlab.control.nets import load_controlnet
    from sdlab.control.unit import ControlUnit
    from sdlab.spec import GenerationSpec

    unit = ControlUnit(image=np.zeros((64, 64, 3), np.uint8), model="shapes-world-edges", preprocessed=True)
    plain = cost.check_spec("shapes-world", GenerationSpec("a"))
    full = cost.check_spec("shapes-world", GenerationSpec("a", control=unit))
    half = cost.check_spec("shapes-world", GenerationSpec("a", control=unit.replace(start=0.5)))
    file = SHIPPED_DIR.parent / "shapes-world-controlnet-edges" / "diffusion_pytorch_model.safetensors"
    assert full.weight_bytes - plain.weight_bytes == file.stat().st_size
    assert 1.2 < full.seconds / plain.seconds < 1.6
    assert half.seconds - plain.seconds == pytest.approx((full.seconds - plain.seconds) / 2, rel=0.02)  # the decoder is shared
    guess = cost.check_spec("shapes-world", GenerationSpec("a", control=unit, guess_mode=True))  # conditional half only
    assert guess.seconds == pytest.approx(half.seconds)
    loaded = load_controlnet("shapes-world-edges", dtype=torch.float32)  # a model object reads the same from its config
    assert cost.check_spec("shapes-world", GenerationSpec("a", control=unit.replace(model=loaded))).seconds == pytest.approx(full.seconds)
    with pytest.raises(ValidationError, match=r"^cost: '4096x4096, 1 image, 25 steps, 1 ControlNet' is not valid"):
        cost.check_spec("shapes-world", GenerationSpec("a", width=4096, height=4096, control=unit))


def test_reproduce_refuses_a_costly_file_before_loading(machine, tmp_path):
    from sdlab.reproduce import reproduce

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a circle\nSteps: 1000000, Sampler: Euler, CFG scale: 5, Seed: 1, Size: 64x64, Model: shapes-world")
    Image.new("RGB", (64, 64)).save(tmp_path / "x.png", pnginfo=info)
    loaded = []

    class Loaded(Exception):
        pass

    def load(spec):
        loaded.append(spec)
        raise Loaded

    with pytest.raises(ValidationError, match="1000000 steps"):
        reproduce(load, tmp_path / "x.png")
    assert loaded == []
    with pytest.raises(Loaded):  # forced: it goes on to load the model
        reproduce(load, tmp_path / "x.png", force=True)
    with pytest.raises(ModelNotFoundError, match="no-such-model"):  # a model named nowhere here: before loading too
        reproduce(load, tmp_path / "x.png", model="no-such-model")
    assert len(loaded) == 1


def test_check_output(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "dir").mkdir()
    refusals = [
        (("out", tmp_path / "file.txt", "dir"), "a directory to write into; this is a file"),
        (("out", tmp_path / "dir", "file"), "a file name; this is a directory"),
        (("out", tmp_path / "file.txt" / "a" / "b.png", "file"), "is not a directory"),
        (("out", "/proc/sdlab-x/y", "dir"), "is not writable"),
        (("out", tmp_path / "x.xyz", "file", (".png",)), "a file name ending in .png"),
        (("out", tmp_path / "file.txt", "file", None, (tmp_path / "file.txt",)), "other than the input"),
        (("out", tmp_path / "file.txt", "file", None, (), False), "does not exist yet"),
    ]
    for args, words in refusals:
        with pytest.raises(ValidationError, match=words):
            check_output(*args)
    assert check_output("out", tmp_path / "new" / "deeper", "dir") == tmp_path / "new" / "deeper"
    assert check_output("out", tmp_path / "file.txt", "file") == tmp_path / "file.txt"  # overwriting allowed by default
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file.txt"]  # nothing made


def test_locate(tmp_path):
    path, defaults = locate("shapes-world")
    assert path == SHIPPED_DIR and (defaults["width"], defaults["height"]) == (64, 64)
    (tmp_path / "empty").mkdir()
    (tmp_path / "m.ckpt").write_bytes(b"x")
    for name, error, words in ((tmp_path / "missing.safetensors", ModelNotFoundError, "no such file"),
                               (tmp_path / "empty", ModelNotFoundError, "not a diffusers pipeline"),
                               (tmp_path / "m.ckpt", UnsafeCheckpointError, "pickle"),
                               ("nothing-known", ModelNotFoundError, r"^model: .nothing-known. is not valid; valid: a registered name")):
        with pytest.raises(error, match=words):
            locate(name)
    assert locate(tmp_path / "m.ckpt", allow_pickle=True)[0] == tmp_path / "m.ckpt"


def test_force_on_the_command_line_goes_past_the_estimate(machine, monkeypatch, tmp_path):
    import sdlab.models
    from sdlab.cli import main

    class Loaded(Exception):
        pass

    def load(*args, **kwargs):
        raise Loaded

    monkeypatch.setattr(sdlab.models, "load_pipeline", load)
    argv = ["generate", "a circle", "--size", "4096x4096", "--out", str(tmp_path)]
    assert main(argv) == 2  # refused, the model never loaded
    with pytest.raises(Loaded):
        main([*argv, "--force"])
