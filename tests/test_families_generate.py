"""Every generation capability on tiny random pipelines of each real SD family, against plain diffusers.

The oracle: diffusers' own pipeline, loaded fresh from the same directory and called
with the same noise (CPU generators seeded seed + k), the same scheduler (built by
hand here from the model's config) and the same embeddings, gives the same image.
Where a capability cannot apply to a family, sdlab refuses in one line.
"""
import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from sdlab.errors import ValidationError
from sdlab.generate import generate, generate_many
from sdlab.models import family
from sdlab.prompts import encode_prompts
from sdlab.spec import GenerationSpec
from sdlab.trace import trace, trace_many

FAMILIES = ["sd1", "sd2", "sd2-inpaint", "sdxl", "sd3"]
PROMPT, NEGATIVE = "a red circle on a blue background", "blurry"


def _px(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _oracle(directory, sampler: str, mode="txt2img"):
    """diffusers' own pipeline for ``mode``, loaded fresh, with the sampler's scheduler handed to its constructor
    (which is where diffusers corrects legacy configs, e.g. DDIM's clip_sample for SD checkpoints)."""
    cls = {"txt2img": diffusers.AutoPipelineForText2Image, "img2img": diffusers.AutoPipelineForImage2Image,
           "inpaint": diffusers.AutoPipelineForInpainting}[mode]
    loaded = diffusers.DiffusionPipeline.from_pretrained(str(directory))
    pipe = cls.from_pipe(loaded, scheduler=_by_hand(sampler, dict(loaded.scheduler.config)))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _by_hand(sampler: str, config: dict):
    """The scheduler a user of plain diffusers would build for an A1111 sampler name."""
    if config.get("_class_name", "").startswith("FlowMatch"):
        return {"Euler": diffusers.FlowMatchEulerDiscreteScheduler, "Heun": diffusers.FlowMatchHeunDiscreteScheduler}[sampler].from_config(config)
    return {"Euler": diffusers.EulerDiscreteScheduler, "DDIM": diffusers.DDIMScheduler,
            "Euler a": diffusers.EulerAncestralDiscreteScheduler}[sampler].from_config(config)


def _embeds(pipe, n=1):
    return encode_prompts(pipe, PROMPT, NEGATIVE, n, 1)


def test_each_fixture_is_its_family(loaded):
    assert [family(loaded(name)[0]) for name in FAMILIES] == ["sd1", "sd2", "sd-inpaint", "sdxl", "sd3"]


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("sampler", ["Euler", "DDIM", "Euler a"])
def test_txt2img_equals_plain_diffusers(loaded, name, sampler):
    pipe, directory = loaded(name)
    if name == "sd3" and sampler != "Euler":
        with pytest.raises(ValidationError, match="no flow-matching form .* valid: Euler, Heun"):
            generate(pipe, GenerationSpec(PROMPT, negative_prompt=NEGATIVE, seed=3, steps=4, sampler=sampler))
        return
    scheduler_before = pipe.scheduler
    spec = GenerationSpec(PROMPT, negative_prompt=NEGATIVE, seed=3, steps=4, guidance=4.0, sampler=sampler, batch_size=2)
    ours = generate(pipe, spec)
    assert pipe.scheduler is scheduler_before  # the user's pipeline keeps its scheduler
    oracle = _oracle(directory, sampler, "inpaint" if name == "sd2-inpaint" else "txt2img")
    kwargs = dict(num_inference_steps=4, guidance_scale=4.0, width=64, height=64,
                  generator=[torch.Generator().manual_seed(3 + k) for k in range(2)], **_embeds(pipe, 2))
    if name == "sd2-inpaint":  # a 9-channel model draws from scratch under a full mask over grey, as A1111 does
        # (one image per seed, so that each image's VAE sample comes from its own generator)
        kwargs.update(image=[Image.new("RGB", (64, 64), (127, 127, 127))] * 2, mask_image=[Image.new("L", (64, 64), 255)] * 2, strength=1.0)
    with torch.no_grad():
        theirs = oracle(**kwargs).images
    for a, b in zip(ours.images, theirs):
        assert np.abs(_px(a) - _px(b)).max() <= 1
    assert np.abs(_px(ours.images[0]) - _px(ours.images[1])).max() > 0  # the two seeds differ: the comparison can fail


@pytest.mark.parametrize("name", FAMILIES)
def test_img2img_and_inpaint_equal_plain_diffusers(loaded, name):
    pipe, directory = loaded(name)
    sampler = "Euler" if name == "sd3" else "DDIM"
    init = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    for mode, extra in (("img2img", {}), ("inpaint", {"mask": Image.fromarray(mask), "mask_blur": 0})):
        spec = GenerationSpec(PROMPT, negative_prompt=NEGATIVE, seed=5, steps=6, guidance=3.0, sampler=sampler,
                              init_image=init, strength=0.6, **extra)
        ours = _px(generate(pipe, spec).images[0])
        run_mode = "inpaint" if name == "sd2-inpaint" else mode
        oracle = _oracle(directory, sampler, run_mode)
        kwargs = dict(image=init, strength=0.6, num_inference_steps=6, guidance_scale=3.0,
                      generator=[torch.Generator().manual_seed(5)], **_embeds(pipe))
        if run_mode == "inpaint":
            kwargs.update(mask_image=Image.fromarray(mask) if mode == "inpaint" else Image.new("L", (64, 64), 255), width=64, height=64)
        with torch.no_grad():
            theirs = _px(oracle(**kwargs).images[0])
        inside = np.zeros((64, 64), bool)
        inside[16:48, 16:48] = True
        region = inside if mode == "inpaint" else np.ones((64, 64), bool)
        assert np.abs(ours[region] - theirs[region]).max() <= 1, (mode, name)
        if mode == "inpaint":  # outside the mask: the original pixels, as A1111 pastes them back
            assert np.array_equal(ours[~inside], _px(init)[~inside])


@pytest.mark.parametrize("name", FAMILIES)
def test_img2img_keeps_the_init_size_away_from_native(loaded, name):
    """An init of another size than the model's native one comes back at its own size (SD 3's img2img resizes to
    the height/width it is given, native when none is: generate passes the init's)."""
    pipe, _ = loaded(name)
    init = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    spec = GenerationSpec(PROMPT, seed=2, steps=2, sampler="Euler", init_image=init, strength=0.5)
    result = generate(pipe, spec)
    assert result.images[0].size == (96, 64) and (result.specs[0].width, result.specs[0].height) == (96, 64)


@pytest.mark.parametrize("name", FAMILIES)
def test_outpaint_extends_and_keeps_the_original(loaded, name):
    pipe, _ = loaded(name)
    init = Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    spec = GenerationSpec(PROMPT, seed=4, steps=2, sampler="Euler", init_image=init, outpaint=(32, 0, 0, 0), mask_blur=0)
    out = _px(generate(pipe, spec).images[0])
    assert out.shape == (64, 96, 3)
    assert np.array_equal(out[:, 32:], _px(init))  # the original, pasted back untouched
    assert np.abs(out[:, :32] - _px(init)[:, :1]).max() > 10  # the new strip is generated, not the edge-pixel fill


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("sampler", ["DPM++ SDE", "Euler a", "DPM++ 2M SDE"])
def test_seed_fixes_the_image_and_batch_k_is_seed_plus_k(loaded, name, sampler):
    pipe, _ = loaded(name)
    if name == "sd3":
        sampler = "Heun"
    base = GenerationSpec(PROMPT, seed=11, steps=4, guidance=3.0, sampler=sampler)
    torch.manual_seed(0)
    a = generate(pipe, base).images[0]
    torch.manual_seed(1)  # the global RNG must not matter
    b = generate(pipe, base).images[0]
    assert np.array_equal(_px(a), _px(b))
    batch = generate(pipe, base.replace(batch_size=3))
    for k in range(3):
        single = generate(pipe, base.replace(seed=11 + k)).images[0]
        assert np.abs(_px(batch.images[k]) - _px(single)).max() <= 1


@pytest.mark.parametrize("name", FAMILIES)
def test_sweep_with_per_sample_guidance_equals_one_call_each_and_is_traced(loaded, name):
    pipe, _ = loaded(name)
    sampler = "Euler" if name == "sd3" else "DDIM"
    specs = [GenerationSpec(PROMPT, seed=s, steps=3, guidance=g, sampler=sampler) for s, g in ((1, 2.0), (2, 6.0), (3, 4.0))]
    many = generate_many(pipe, specs)
    for (image, _), spec in zip(many, specs):
        assert np.abs(_px(image) - _px(generate(pipe, spec).images[0])).max() <= 1
    traces = trace_many(pipe, specs)
    for tr, spec in zip(traces, specs):
        single = trace(pipe, spec)
        assert np.abs(_px(tr.image) - _px(single.image)).max() <= 1
        assert len(tr.steps) == len(single.steps) == 3
        for ours, theirs in zip(tr.steps, single.steps):  # each sample's guided prediction is its own guidance's
            assert torch.allclose(ours.eps, theirs.eps, atol=1e-4)
            assert torch.allclose(ours.x0, theirs.x0, atol=1e-4)


@pytest.mark.parametrize("name", FAMILIES)
def test_trace_records_every_step_and_ends_at_the_image(loaded, name):
    pipe, _ = loaded(name)
    sampler = "Euler" if name == "sd3" else "DDIM"
    spec = GenerationSpec(PROMPT, seed=4, steps=5, guidance=3.0, sampler=sampler)
    tr = trace(pipe, spec)
    assert np.array_equal(np.asarray(tr.image), np.asarray(generate(pipe, spec).images[0]))
    assert len(tr.steps) == 5
    s = tr.steps[0]
    assert torch.allclose(s.eps, s.eps_uncond + 3.0 * (s.eps_cond - s.eps_uncond), atol=1e-4)
    assert all(a.sigma > b.sigma for a, b in zip(tr.steps, tr.steps[1:]))


@pytest.mark.parametrize("name", ["sd1", "sdxl", "sd2-inpaint", "sd3"])
def test_attention_maps_of_any_aspect_ratio(loaded, name):
    pipe, _ = loaded(name)
    tr = trace(pipe, GenerationSpec(PROMPT, seed=1, steps=2, width=96, height=64, sampler="Euler"), attention=True)
    maps = tr.steps[0].attention
    assert maps.shape[1:] == (8, 12)  # the latent's h x w
    assert torch.allclose(maps.sum(dim=0), torch.ones(8, 12), atol=1e-4)


def test_sd3_joint_attention_maps_leave_the_image_unchanged(loaded):
    pipe, _ = loaded("sd3")
    spec = GenerationSpec(PROMPT, seed=1, steps=3, width=96, height=64)
    tr = trace(pipe, spec, attention=True)
    assert np.array_equal(np.asarray(tr.image), np.asarray(generate(pipe, spec).images[0]))  # maps computed beside, not instead
    maps = tr.steps[0].attention
    assert maps.shape[0] > 77 and maps.shape[1:] == (8, 12)  # CLIP's 77 positions, then T5's; the latent's h x w
    assert torch.allclose(maps.sum(dim=0), torch.ones(8, 12), atol=1e-4)


def test_sd3_sizes_are_multiples_of_the_patch(loaded):
    pipe, _ = loaded("sd3")
    with pytest.raises(ValidationError, match="multiple of 16"):
        generate(pipe, GenerationSpec(PROMPT, seed=1, steps=2, width=72, height=64))


@pytest.mark.slow
def test_flow_samplers_converge_to_eulers_solution(loaded):
    """Deterministic flow samplers solve the same ODE: with enough steps their images agree."""
    pipe, _ = loaded("sd3")
    spec = GenerationSpec(PROMPT, seed=2, steps=40, guidance=1.0)
    images = {s: _px(generate(pipe, spec.replace(sampler=s)).images[0]).astype(float) for s in ("Euler", "Heun", "DPM++ 2M", "UniPC")}
    few = _px(generate(pipe, spec.replace(sampler="Euler", steps=2)).images[0]).astype(float)
    for name in ("Heun", "DPM++ 2M", "UniPC"):
        assert np.abs(images[name] - images["Euler"]).mean() < 0.5 * np.abs(few - images["Euler"]).mean(), name


def test_watermark_preset_follows_the_family(loaded):
    from sdlab.watermark.codec import preset_for

    # the tiny 9-channel model reads 32-wide text states, not SD 2's 1024-wide ones: it counts as an SD 1.5 inpainter
    assert [preset_for(loaded(name)[0]) for name in FAMILIES] == ["sd1", "sd2", "sd1", "sdxl", None]


@pytest.mark.parametrize("name", ["sdxl", "sd3"])
def test_the_compression_lab_runs_on_the_models_own_vae(family_dir, name):
    """SDXL's VAE and SD 3's 16-channel one: the latent codec keeps every channel and decodes what the VAE would."""
    from sdlab.compression.container import LatentHeader
    from sdlab.compression.latent import LatentCodec
    from sdlab.compression.vae import load_vae

    vae = load_vae(str(family_dir(name)))
    codec = LatentCodec(vae)
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = codec.encode(image, 100)
    assert LatentHeader.unpack(data).channels == vae.config.latent_channels == (16 if name == "sd3" else 4)
    decoded = codec.decode(data)
    with torch.no_grad():
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
        direct = vae.decode(vae.encode(x).latent_dist.mean).sample[0]
    direct = ((direct.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy()
    assert decoded.shape == (64, 64, 3) and np.abs(decoded.astype(float) - direct).mean() < 2.0  # 256 levels per channel


def test_the_cli_runs_a_family_directory_and_refuses_in_one_line(family_dir, tmp_path):
    import subprocess
    import sys

    from sdlab.metadata import read_parameters

    sd3, sd1 = str(family_dir("sd3")), str(family_dir("sd1"))
    ok = subprocess.run([sys.executable, "-m", "sdlab", "generate", "a (red:1.3) circle", "--model", sd3, "--steps", "2",
                         "--seed", "7", "--sampler", "Heun", "--out", str(tmp_path)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    spec = read_parameters(next(tmp_path.glob("*.png")))
    assert (spec.seed, spec.sampler, spec.steps, spec.prompt) == (7, "Heun", 2, "a (red:1.3) circle")
    skip = subprocess.run([sys.executable, "-m", "sdlab", "generate", "a circle", "--model", sd1, "--steps", "2", "--clip-skip", "2",
                           "--out", str(tmp_path / "skip")], capture_output=True, text=True)
    assert skip.returncode == 0, skip.stderr  # crashed with transformers 5.25 before
    bad = subprocess.run([sys.executable, "-m", "sdlab", "generate", "a circle", "--model", sd3, "--sampler", "Euler a",
                          "--out", str(tmp_path / "bad")], capture_output=True, text=True)
    last = bad.stderr.strip().splitlines()[-1]  # after diffusers' loading bars: one line, no traceback
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert last.startswith("error: sampler: 'Euler a'") and last.endswith("valid: Euler, Heun, DPM++ 2M, UniPC")
