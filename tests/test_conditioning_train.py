"""ControlNet training (sdlab.conditioning.train): only the trainable copy learns, runs resume exactly, bad input is refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sdlab.conditioning.train import CONTROLNET_DIR, ControlNetConfig, embedding_channels, train_controlnet
from sdlab.errors import Cancelled, ValidationError


@pytest.fixture(scope="module")
def world():
    from sdlab.models import load_pipeline

    return load_pipeline("shapes-world", device="cpu")


@pytest.fixture(scope="module")
def data():
    from sdlab.mini.control_data import training_data

    return training_data(12, "edges", seed=3)


def _state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _fresh(pipe, cfg):
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=embedding_channels(pipe.vae_scale_factor, cfg))


def test_steps_change_the_controlnet_and_not_the_locked_unet(world, data, tmp_path):
    from diffusers import ControlNetModel

    cfg = ControlNetConfig(steps=3, batch=4, warmup_steps=0, checkpoint_minutes=0)
    unet_before = _state(world.unet)
    fresh = _fresh(world, cfg)
    out = train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path, cfg, progress=False)
    trained = ControlNetModel.from_pretrained(out)
    assert all(torch.equal(v, world.unet.state_dict()[k]) for k, v in unet_before.items())  # the locked copy is untouched
    assert not any(p.requires_grad is False for p in world.unet.parameters())  # nor its flags
    # diffusers' zero convolutions start at exactly zero and have moved
    zero = [fresh.controlnet_mid_block, *fresh.controlnet_down_blocks, fresh.controlnet_cond_embedding.conv_out]
    assert all(float(p.abs().max()) == 0.0 for block in zero for p in block.parameters())
    moved = [trained.controlnet_mid_block, *trained.controlnet_down_blocks]
    assert all(float(p.abs().max()) > 0.0 for block in moved for p in block.parameters())
    # the encoder copy starts as the UNet's own weights
    assert torch.equal(fresh.conv_in.weight, world.unet.conv_in.weight)
    assert not torch.equal(trained.conv_in.weight, world.unet.conv_in.weight)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["stage"] == "controlnet"] == [0, 2]
    assert np.isfinite([r["loss"] for r in log if "loss" in r]).all()


def test_resume_after_cancel_equals_the_uninterrupted_run(world, data, tmp_path):
    cfg = ControlNetConfig(steps=4, batch=4, warmup_steps=2, checkpoint_minutes=100)
    whole = train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / "whole", cfg, progress=False)

    def cancel_at_2(done, total):
        if done == 2:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / "split", cfg, callback=cancel_at_2, progress=False)
    assert torch.load(tmp_path / "split" / "controlnet.ckpt", weights_only=True)["step"] == 2
    seen = []
    split = train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / "split", cfg,
                             callback=lambda d, t: seen.append(d), progress=False)
    assert seen == [3, 4]  # resumed at step 2
    from safetensors.torch import load_file

    a, b = load_file(whole / "diffusion_pytorch_model.safetensors"), load_file(split / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_more_steps_continue_a_finished_run_as_if_it_had_been_longer(world, data, tmp_path):
    from safetensors.torch import load_file

    long = train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / "long", ControlNetConfig(steps=3, batch=2, warmup_steps=1), progress=False)
    train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / "grown", ControlNetConfig(steps=1, batch=2, warmup_steps=1), progress=False)
    grown = train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / "grown", ControlNetConfig(steps=3, batch=2, warmup_steps=1), progress=False)
    a, b = load_file(long / "diffusion_pytorch_model.safetensors"), load_file(grown / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_directory_resumes_only_its_own_settings(world, data, tmp_path):
    train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path, ControlNetConfig(steps=1, batch=2), progress=False)
    with pytest.raises(ValidationError, match="lr") as err:
        train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path, ControlNetConfig(steps=1, batch=2, lr=1e-3), progress=False)
    assert "\n" not in str(err.value)


def test_a_cosine_run_decays_and_its_steps_are_fixed(world, data, tmp_path):
    """With a cosine the step count sets every step's lr: the weights differ from a constant run's after the
    warm-up, and a finished run cannot be continued with more steps (it would not be the longer run)."""
    from safetensors.torch import load_file

    def run(name, steps, scheduler):
        cfg = ControlNetConfig(steps=steps, batch=2, warmup_steps=1, lr_scheduler=scheduler)
        return train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / name, cfg, progress=False)

    one_cos, one_const = load_file(run("c1", 1, "cosine") / "diffusion_pytorch_model.safetensors"), load_file(run("k1", 1, "constant") / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(one_cos[k], one_const[k]) for k in one_cos)  # the warm-up step: the same lr
    three_cos, three_const = load_file(run("c3", 3, "cosine") / "diffusion_pytorch_model.safetensors"), load_file(run("k3", 3, "constant") / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(three_cos[k], three_const[k]) for k in three_cos)
    with pytest.raises(ValidationError, match="steps") as err:
        run("c1", 3, "cosine")
    assert "\n" not in str(err.value)


def test_a_timestep_range_is_what_the_steps_draw_from_and_fits_the_model(world, data, tmp_path):
    """One step at t = 0 and one at t = 999 (the same batch and noise otherwise) give different weights; no range
    is the whole [0, 1000), step for step; a range past the scheduler's timesteps is one line before the run starts."""
    from safetensors.torch import load_file

    from sdlab.conditioning.train import timestep_bounds

    def run(name, bounds):
        cfg = ControlNetConfig(steps=1, batch=2, warmup_steps=0, timestep_range=bounds)
        return load_file(train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / name, cfg, progress=False)
                         / "diffusion_pytorch_model.safetensors")

    low, high, default, whole = run("low", (0, 1)), run("high", (999, 1000)), run("default", None), run("whole", (0, 1000))
    assert any(not torch.equal(low[k], high[k]) for k in low)
    assert all(torch.equal(default[k], whole[k]) for k in default)
    assert timestep_bounds(ControlNetConfig(timestep_range=(0, 300)), 1000) == (0, 300)
    with pytest.raises(ValidationError, match=r"^timestep_range: \(0, 1001\) is not valid; valid: .*<= 1000") as err:
        train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / "past", ControlNetConfig(steps=1, timestep_range=(0, 1001)))
    assert "\n" not in str(err.value) and not (tmp_path / "past").exists()


def test_a_run_continues_from_an_init_controlnet_and_leaves_it_as_it_was(world, data, tmp_path):
    from diffusers import ControlNetModel

    cfg = ControlNetConfig(steps=1, batch=2, warmup_steps=0, lr=1e-12)
    init = _fresh(world, cfg)
    with torch.no_grad():
        for p in init.controlnet_mid_block.parameters():
            p.fill_(0.01)  # not a zero convolution any more
    before = _state(init)
    trained = ControlNetModel.from_pretrained(train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / "a", cfg,
                                                               progress=False, init=init))
    assert all(torch.equal(v, init.state_dict()[k]) for k, v in before.items())  # the model handed in is not changed
    assert torch.allclose(trained.controlnet_mid_block.weight, before["controlnet_mid_block.weight"], atol=1e-6)  # started from it
    saved = json.loads((tmp_path / "a" / "controlnet_config.json").read_text())
    assert saved["init"] is not None and saved["init"].endswith("]")
    with pytest.raises(ValidationError, match="init"):  # its directory does not resume from zero convolutions
        train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / "a", cfg, progress=False)
    with pytest.raises(ValidationError, match="^init: .* is not valid; valid: a ControlNet of this UNet's shape"):
        train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / "b",
                         ControlNetConfig(steps=1, batch=2, embedding_channels=(8, 16, 32)), progress=False, init=init)
    assert not (tmp_path / "b").exists()  # refused before the run directory is written
    with pytest.raises(ValidationError, match="^init: 'UNet2DConditionModel' is not valid"):
        train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / "c", cfg, progress=False, init=world.unet)


@pytest.mark.parametrize("field, value", [("steps", 0), ("batch", -1), ("lr", 0.0), ("lr_scheduler", "linear"), ("text_dropout", 1.5),
                                          ("embedding_channels", (16, -3)), ("timestep_range", (300, 0)), ("timestep_range", (0,))])
def test_config_refuses_bad_values_in_one_line(field, value):
    with pytest.raises(ValidationError, match=f"^{field}: .* is not valid; valid: "):
        ControlNetConfig(**{field: value})


def test_mismatched_data_is_refused_before_any_model_work(data, tmp_path):
    class NoPipe:  # any attribute access would fail: the refusal comes first
        def __getattr__(self, name):
            raise AssertionError("the pipeline was used")

    images, captions, maps = data["images"], data["captions"], data["maps"]
    for bad, match in (((images, captions[:-1], maps), "captions"), ((images, captions, maps[0][:3]), "maps"),
                       ((images.astype(np.float32), captions, maps), "images")):
        with pytest.raises(ValidationError, match=f"^{match}: "):
            train_controlnet(NoPipe(), *bad, tmp_path)
    assert not (tmp_path / "controlnet_config.json").exists()


def test_focus_weight_needs_focus_maps_and_changes_the_trajectory(world, data, tmp_path):
    from safetensors.torch import load_file

    with pytest.raises(ValidationError, match="^focus: None is not valid"):
        train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / "a", ControlNetConfig(focus_weight=12))
    with pytest.raises(ValidationError, match="^focus: "):
        train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / "a", ControlNetConfig(focus_weight=12),
                         focus=data["masks"][:, :8])
    cfg = dict(steps=2, batch=4, warmup_steps=0)
    plain = train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / "plain", ControlNetConfig(**cfg), progress=False)
    focused = train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / "focus", ControlNetConfig(focus_weight=12, **cfg),
                               focus=data["masks"], progress=False)
    a, b = (load_file(d / "diffusion_pytorch_model.safetensors") for d in (plain, focused))
    assert not torch.equal(a["controlnet_mid_block.weight"], b["controlnet_mid_block.weight"])


@pytest.mark.parametrize("name", ["sd1", "sd2"])
def test_trains_on_real_families_and_runs_in_plain_diffusers(family_dir, name, tmp_path):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from PIL import Image

    from sdlab.models import load_pipeline

    pipe = load_pipeline(family_dir(name), device="cpu")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    maps = np.where(rng.random((4, 64, 64, 1)) > 0.8, 255, 0).astype(np.uint8).repeat(3, axis=3)
    out = train_controlnet(pipe, images, ["a red circle"] * 4, maps, tmp_path, ControlNetConfig(steps=2, batch=2), progress=False)
    controlnet = ControlNetModel.from_pretrained(out)
    assert controlnet.config.conditioning_embedding_out_channels == [16, 32, 96, 256]  # the VAE downsamples by 8
    runner = StableDiffusionControlNetPipeline(**{k: v for k, v in pipe.components.items() if k != "image_encoder"}, controlnet=controlnet)
    image = runner("a red circle", image=Image.fromarray(maps[0]), num_inference_steps=2, height=64, width=64,
                   generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()


@pytest.mark.parametrize("name", ["sdxl", "sd3", "sd2-inpaint"])
def test_other_families_are_refused_in_one_line(family_dir, name, tmp_path):
    from sdlab.models import load_pipeline

    pipe = load_pipeline(family_dir(name), device="cpu")
    images = np.zeros((2, 64, 64, 3), np.uint8)
    with pytest.raises(ValidationError, match="sd1 and sd2") as err:
        train_controlnet(pipe, images, ["a", "b"], images.copy(), tmp_path, ControlNetConfig(steps=1, batch=1))
    from sdlab.models import family

    assert "\n" not in str(err.value) and f"a {family(pipe)} model" in str(err.value)
    assert CONTROLNET_DIR not in {p.name for p in tmp_path.iterdir()}


def test_guided_loss_wiring(world, data, tmp_path):
    """At g = 1 with no unconditional term the guided loss is (1 + w) times the plain one, which a first Adam step
    takes alike (the step is lr times the gradient's sign; so the conditional half is the captioned one); at g = 5
    the step goes elsewhere."""
    from safetensors.torch import load_file

    base = dict(steps=1, batch=4, warmup_steps=0, text_dropout=0.0)
    run = lambda name, **extra: load_file(train_controlnet(world, data["images"], data["captions"], data["maps"], tmp_path / name,  # noqa: E731
                                                           ControlNetConfig(**base, **extra), progress=False) / "diffusion_pytorch_model.safetensors")
    plain = run("plain")
    scaled = run("g1", guided_weight=1.0, guided_cfg=1.0, unconditional_weight=0.0)
    guided = run("g5", guided_weight=3.0, guided_cfg=5.0)
    # the zero convolutions: the layers with a gradient at the first step (upstream of them it is 0, they are 0)
    zero_convs = [k for k in plain if k.startswith(("controlnet_down_blocks", "controlnet_mid_block"))]
    lr = ControlNetConfig().lr
    share = lambda run, tol: sum(int(((run[k] - plain[k]).abs() > tol).sum()) for k in zero_convs) / sum(plain[k].numel() for k in zero_convs)  # noqa: E731
    assert share(scaled, 0.05 * lr) < 0.001  # all but the few weights whose gradient is near Adam's epsilon (1e-8)
    assert share(guided, lr) > 0.05  # a different gradient: many weights stepped the other way
