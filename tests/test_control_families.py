"""Generating with ControlNets (and depth2img) on tiny random pipelines of each family, against plain diffusers.

The oracle: diffusers' own ControlNet pipeline class, built by hand from a freshly loaded copy of the
same directory, the same ControlNet, the same map, scheduler, noise and embeddings, gives the same
image. A ControlNet whose zero convolutions are perturbed is used wherever the comparison must be
able to fail (an untrained one changes nothing, which is tested on its own).
"""
import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from sdlab.control.unit import ControlUnit
from sdlab.errors import ValidationError
from sdlab.generate import generate
from sdlab.models import family, load_pipeline
from sdlab.prompts import encode_prompts
from sdlab.spec import GenerationSpec
from sdlab.trace import trace

PROMPT, NEGATIVE = "a red circle on a blue background", "blurry"
CONTROL_FAMILIES = ["sd1", "sd2", "sd2-inpaint", "sdxl", "sd3"]
MAP = Image.fromarray(np.where(np.random.default_rng(7).random((64, 64)) > 0.8, 255, 0).astype(np.uint8)).convert("RGB")


def tiny_controlnet(pipe, trained: bool = True, seed: int = 0):
    """A ControlNet for ``pipe``'s denoiser: diffusers' ``from_unet`` copy (zero convolutions at zero), or,
    with ``trained``, every weight nudged so that the control changes the image."""
    torch.manual_seed(seed)
    if getattr(pipe, "transformer", None) is not None:
        net = diffusers.SD3ControlNetModel.from_config({**pipe.transformer.config, "num_layers": 1, "extra_conditioning_channels": 0})
        if not trained:
            return net.eval()
    else:
        kwargs = {"conditioning_embedding_out_channels": (4, 8, 8, 8)}
        if int(pipe.unet.config.in_channels) != 4:  # an inpainting UNet: ControlNets read the 4-channel latent
            net = diffusers.ControlNetModel.from_config({**pipe.unet.config, "in_channels": 4, **kwargs})
            net.load_state_dict({k: v for k, v in diffusers.ControlNetModel.from_unet(pipe.unet, **kwargs).state_dict().items()
                                 if k != "conv_in.weight"}, strict=False)
        else:
            net = diffusers.ControlNetModel.from_unet(pipe.unet, **kwargs)
    if trained:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def _px(images) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.int16) for im in images])


def _oracle(directory, name, net, mode="txt2img"):
    """diffusers' ControlNet pipeline class for the family, built from a fresh copy's components, with Euler."""
    fresh = diffusers.DiffusionPipeline.from_pretrained(str(directory))
    flow = name == "sd3"
    if mode == "img2img":  # DDIM without sample clipping, as StableDiffusionPipeline corrects SD configs (ControlNet pipelines do not)
        scheduler = diffusers.DDIMScheduler.from_config(fresh.scheduler.config, clip_sample=False)
    else:
        scheduler = (diffusers.FlowMatchEulerDiscreteScheduler if flow else diffusers.EulerDiscreteScheduler).from_config(fresh.scheduler.config)
    cls = {("sd3", "txt2img"): diffusers.StableDiffusion3ControlNetPipeline,
           ("sdxl", "txt2img"): diffusers.StableDiffusionXLControlNetPipeline,
           ("sd1", "img2img"): diffusers.StableDiffusionControlNetImg2ImgPipeline,
           ("sd2-inpaint", "txt2img"): diffusers.StableDiffusionControlNetInpaintPipeline}.get(
        (name, mode), diffusers.StableDiffusionControlNetPipeline)
    import inspect

    accepted = inspect.signature(cls.__init__).parameters
    parts = {k: v for k, v in fresh.components.items() if k in accepted}
    parts.update(scheduler=scheduler, controlnet=net)
    if "requires_safety_checker" in accepted:
        parts["requires_safety_checker"] = False
    pipe = cls(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("name", CONTROL_FAMILIES)
def test_controlled_txt2img_equals_plain_diffusers(loaded, name):
    pipe, directory = loaded(name)
    net = tiny_controlnet(pipe)
    unit = ControlUnit(MAP, "edges", model=net, scale=0.8, end=0.75, preprocessed=True)
    spec = GenerationSpec(PROMPT, negative_prompt=NEGATIVE, seed=3, steps=4, guidance=4.0, sampler="Euler", batch_size=2, control=unit)
    before = (pipe.scheduler, getattr(pipe, "unet", None) or pipe.transformer, set(pipe.components))
    result = generate(pipe, spec)
    assert before == (pipe.scheduler, getattr(pipe, "unet", None) or pipe.transformer, set(pipe.components))  # the user's pipe untouched
    ours = _px(result.images)
    kwargs = dict(num_inference_steps=4, guidance_scale=4.0, width=64, height=64, controlnet_conditioning_scale=0.8,
                  control_guidance_start=0.0, control_guidance_end=0.75,
                  generator=[torch.Generator().manual_seed(3 + k) for k in range(2)], **encode_prompts(pipe, PROMPT, NEGATIVE, 2, 1))
    if name == "sd3":
        kwargs["control_image"] = MAP
    elif name == "sd2-inpaint":  # a 9-channel model draws from scratch under a full mask over grey, as A1111 does
        kwargs.update(control_image=MAP, image=[Image.new("RGB", (64, 64), (127, 127, 127))] * 2,
                      mask_image=[Image.new("L", (64, 64), 255)] * 2, strength=1.0)
    else:
        kwargs["image"] = MAP
    if name == "sd3":  # its pipeline samples the map's VAE latent from the global generator: sdlab seeds it with the seed
        torch.manual_seed(3)
    with torch.no_grad():
        theirs = _px(_oracle(directory, name, net)(**kwargs).images)
    assert np.abs(ours - theirs).max() <= 1
    plain = _px(generate(pipe, spec.replace(control=())).images)
    assert np.abs(ours - plain).max() > 10  # the control changed the image: the comparison could fail
    assert result.control_maps and np.array_equal(np.asarray(result.control_maps[0]), np.asarray(MAP))


@pytest.mark.parametrize("name", CONTROL_FAMILIES)
def test_scale_zero_and_untrained_zero_convolutions_change_no_pixel(loaded, name):
    pipe, _ = loaded(name)
    spec = GenerationSpec(PROMPT, seed=5, steps=3, guidance=3.0, sampler="Euler")
    plain = _px(generate(pipe, spec).images)
    untrained = ControlUnit(MAP, "edges", model=tiny_controlnet(pipe, trained=False), preprocessed=True)
    assert np.array_equal(_px(generate(pipe, spec.replace(control=untrained)).images), plain)
    off = ControlUnit(MAP, "edges", model=tiny_controlnet(pipe), scale=0.0, preprocessed=True)
    assert np.array_equal(_px(generate(pipe, spec.replace(control=off)).images), plain)


def test_several_controlnets_and_guess_mode_equal_diffusers(loaded):
    pipe, directory = loaded("sd1")
    nets = [tiny_controlnet(pipe, seed=1), tiny_controlnet(pipe, seed=2)]
    other = MAP.transpose(Image.FLIP_LEFT_RIGHT)
    units = [ControlUnit(MAP, "edges", model=nets[0], scale=0.7, preprocessed=True),
             ControlUnit(other, "mask", model=nets[1], scale=1.2, start=0.25, preprocessed=True)]
    for guess in (False, True):
        spec = GenerationSpec(PROMPT, negative_prompt=NEGATIVE, seed=9, steps=4, guidance=5.0, sampler="Euler", control=units, guess_mode=guess)
        ours = _px(generate(pipe, spec).images)
        with torch.no_grad():
            theirs = _px(_oracle(directory, "sd1", nets)(
                image=[MAP, other], controlnet_conditioning_scale=[0.7, 1.2], control_guidance_start=[0.0, 0.25],
                control_guidance_end=[1.0, 1.0], guess_mode=guess, num_inference_steps=4, guidance_scale=5.0, width=64, height=64,
                generator=[torch.Generator().manual_seed(9)], **encode_prompts(pipe, PROMPT, NEGATIVE, 1, 1)).images)
        assert np.abs(ours - theirs).max() <= 1, guess
    single = _px(generate(pipe, spec.replace(control=units[:1], guess_mode=False)).images)
    assert np.abs(ours - single).max() > 10  # the second ControlNet counts


def test_controlled_img2img_equals_diffusers(loaded):
    pipe, directory = loaded("sd1")
    net = tiny_controlnet(pipe, seed=3)
    init = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    spec = GenerationSpec(PROMPT, seed=2, steps=6, guidance=3.0, sampler="DDIM", init_image=init, strength=0.6,
                          control=ControlUnit(MAP, "edges", model=net, preprocessed=True))
    ours = _px(generate(pipe, spec).images)
    with torch.no_grad():
        theirs = _px(_oracle(directory, "sd1", net, "img2img")(
            image=init, control_image=MAP, controlnet_conditioning_scale=1.0,  # (its default is 0.8)
            strength=0.6, num_inference_steps=6, guidance_scale=3.0,
            generator=[torch.Generator().manual_seed(2)], **encode_prompts(pipe, PROMPT, "", 1, 1)).images)
    assert np.abs(ours - theirs).max() <= 1


@pytest.mark.parametrize("name", ["sd1", "sdxl", "sd3"])
def test_hooks_and_the_trace_see_the_controlled_prediction(loaded, name):
    """The Denoiser wraps the UNet/transformer; the ControlNet's residuals reach it through the call's keywords."""
    pipe, _ = loaded(name)
    spec = GenerationSpec(PROMPT, seed=4, steps=3, guidance=3.0, sampler="Euler",
                          control=ControlUnit(MAP, "edges", model=tiny_controlnet(pipe, seed=4), preprocessed=True))
    calls = []
    hooked = _px(generate(pipe, spec, hooks=[lambda call: calls.append(call["i"])]).images)
    assert np.array_equal(hooked, _px(generate(pipe, spec).images)) and len(calls) == 3
    traced = trace(pipe, spec)
    assert np.array_equal(_px([traced.image]), hooked)


def test_the_map_is_drawn_from_an_ordinary_image_and_fitted(loaded):
    from sdlab.control.apply import condition_map, fit
    from sdlab.control.preprocess import canny

    photo = Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 96, 3), dtype=np.uint8))
    unit = ControlUnit(photo, "edges")
    drawn = condition_map(unit, (64, 64))
    assert drawn.size == (64, 64)
    assert np.array_equal(np.asarray(drawn), np.asarray(fit(canny(photo), (64, 64), "Crop and Resize")))
    framed = np.zeros((48, 96, 3), np.uint8)
    framed[8:40, 8:88] = 255
    filled = np.asarray(fit(Image.fromarray(framed), (64, 64), "Resize and Fill"))
    assert filled[:8].max() == 0 and filled[32, 32].min() == 255  # padded with the median border colour (black)
    grey = np.asarray(fit(Image.new("RGB", (96, 48), (90, 90, 90)), (64, 64), "Resize and Fill"))
    assert (grey == 90).all()  # a grey map's ground is grey
    edges = np.asarray(fit(canny(photo), (200, 100), "Just Resize"))
    assert edges.shape == (100, 200, 3) and set(np.unique(edges)) <= {0, 255}  # a binary map stays binary
    pipe, _ = loaded("sd1")
    result = generate(pipe, GenerationSpec(PROMPT, seed=1, steps=2, sampler="Euler",
                                           control=ControlUnit(photo, "edges", model=tiny_controlnet(pipe))))
    assert np.array_equal(np.asarray(result.control_maps[0]), np.asarray(drawn))
    assert result.specs[0].control[0].model_hash  # the ControlNet's hash is recorded for the metadata


def test_a_controlnet_for_another_family_is_refused_in_one_line(loaded):
    sd1, _ = loaded("sd1")
    sdxl, _ = loaded("sdxl")
    spec = GenerationSpec(PROMPT, seed=1, steps=2, control=ControlUnit(MAP, "edges", model=tiny_controlnet(sdxl), preprocessed=True))
    with pytest.raises(ValidationError, match=r"^control model of unit 0: .* is not valid for this sd1 model's cross_attention_dim"):
        generate(sd1, spec)
    wrong_scale = diffusers.ControlNetModel.from_unet(sd1.unet, conditioning_embedding_out_channels=(4, 8, 8))
    with pytest.raises(ValidationError, match=r"^control model of unit 0: a map encoder downsampling by 4 is not valid for this model's VAE"):
        generate(sd1, spec.replace(control=ControlUnit(MAP, "edges", model=wrong_scale, preprocessed=True)))
    with pytest.raises(ValidationError, match=r"^control model of unit 0: None is not valid"):
        generate(sd1, spec.replace(control=ControlUnit(MAP, "edges")))


def test_depth2img_equals_plain_diffusers_with_the_users_depth_map(loaded):
    pipe, directory = loaded("sd2-depth")
    assert family(pipe) == "sd2-depth" and pipe.depth_estimator is None  # loads without its estimator: the user's map is used
    depth = Image.fromarray(np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1)))  # near on the right
    init = Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    spec = GenerationSpec(PROMPT, negative_prompt=NEGATIVE, seed=6, steps=5, guidance=4.0, sampler="DDIM", init_image=init,
                          strength=0.8, control=ControlUnit(depth, "depth"))
    ours = _px(generate(pipe, spec).images)
    fresh = diffusers.StableDiffusionDepth2ImgPipeline.from_pretrained(str(directory), depth_estimator=None, feature_extractor=None)
    fresh.scheduler = diffusers.DDIMScheduler.from_config(fresh.scheduler.config)
    fresh.set_progress_bar_config(disable=True)
    with torch.no_grad():
        theirs = _px(fresh(image=init, depth_map=torch.from_numpy(np.asarray(depth, np.float32) / 255.0)[None], strength=0.8,
                           num_inference_steps=5, guidance_scale=4.0, generator=[torch.Generator().manual_seed(6)],
                           **encode_prompts(pipe, PROMPT, NEGATIVE, 1, 1)).images)
    assert np.abs(ours - theirs).max() <= 1
    flipped = _px(generate(pipe, spec.replace(control=ControlUnit(depth.transpose(Image.FLIP_LEFT_RIGHT), "depth"))).images)
    assert np.abs(ours - flipped).max() > 10  # the depth map counts


def test_depth2img_refusals_name_the_family(loaded):
    pipe, _ = loaded("sd2-depth")
    depth = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    with pytest.raises(ValidationError, match=r"^mode: 'txt2img' is not valid; valid: img2img for sd2-depth"):
        generate(pipe, GenerationSpec(PROMPT, steps=2, control=ControlUnit(depth, "depth")))
    init = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValidationError, match=r"^control: \[\] is not valid; valid: for sd2-depth: exactly one depth map"):
        generate(pipe, GenerationSpec(PROMPT, steps=2, init_image=init))
    with pytest.raises(ValidationError, match=r"^depth map: 'a flat image' is not valid"):
        generate(pipe, GenerationSpec(PROMPT, steps=2, init_image=init, control=ControlUnit(init, "depth")))


def test_sd3_refuses_what_its_controlnet_pipeline_lacks(loaded):
    pipe, _ = loaded("sd3")
    unit = ControlUnit(MAP, "edges", model=tiny_controlnet(pipe), preprocessed=True)
    with pytest.raises(ValidationError, match=r"^control: 'txt2img with guess mode on sd3' is not valid; valid: SD 3 ControlNets"):
        generate(pipe, GenerationSpec(PROMPT, steps=2, control=unit, guess_mode=True))
    with pytest.raises(ValidationError, match=r"^control: 'img2img on sd3' is not valid"):
        generate(pipe, GenerationSpec(PROMPT, steps=2, control=unit, init_image=np.zeros((64, 64, 3), np.uint8)))


@pytest.mark.parametrize("name", ["sdxl", "sd3"])
def test_several_controlnets_and_sdxl_img2img_inpaint_run_and_count(loaded, name):
    pipe, _ = loaded(name)
    units = [ControlUnit(MAP, "edges", model=tiny_controlnet(pipe, seed=1), preprocessed=True),
             ControlUnit(MAP.transpose(Image.FLIP_TOP_BOTTOM), "mask", model=tiny_controlnet(pipe, seed=2), scale=0.5, preprocessed=True)]
    spec = GenerationSpec(PROMPT, seed=1, steps=2, guidance=3.0, sampler="Euler", control=units)
    both, first = _px(generate(pipe, spec).images), _px(generate(pipe, spec.replace(control=units[:1])).images)
    assert np.abs(both - first).max() > 10  # the second ControlNet acts
    if name == "sdxl":
        init = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        mask[16:48, 16:48] = 255
        for extra in ({"init_image": init, "strength": 0.6}, {"init_image": init, "mask": mask, "mask_blur": 0}):
            out = _px(generate(pipe, spec.replace(control=units[:1], **extra)).images)
            plain = _px(generate(pipe, spec.replace(control=(), **extra)).images)
            assert np.abs(out - plain).max() > 10, list(extra)
            if "mask" in extra:  # outside the mask the original pixels stay, with control as without
                assert np.array_equal(out[0][mask == 0], init[mask == 0])


def test_generate_many_runs_controlled_specs_one_call_each(loaded):
    from sdlab.generate import generate_many

    pipe, _ = loaded("sd1")
    unit = ControlUnit(MAP, "edges", model=tiny_controlnet(pipe, seed=6), preprocessed=True)
    specs = [GenerationSpec(PROMPT, seed=s, steps=2, sampler="Euler", control=unit) for s in (1, 2)] + [GenerationSpec(PROMPT, seed=1, steps=2, sampler="Euler")]
    out = generate_many(pipe, specs)
    for (image, resolved), spec in zip(out, specs):
        assert np.array_equal(_px([image]), _px(generate(pipe, spec).images))
        assert len(resolved.control) == len(spec.control)


@pytest.mark.parametrize("name", ["sd1", "sdxl"])
def test_a_half_precision_pipeline_stays_half_precision(family_dir, name):
    """diffusers' from_pipe casts the new pipeline's modules to float32 unless given a dtype; they are the user's."""
    pipe = load_pipeline(str(family_dir(name)), device="cpu", dtype="bf16")
    net = tiny_controlnet(pipe).to(dtype=torch.bfloat16)
    for spec in (GenerationSpec(PROMPT, seed=1, steps=2, sampler="Euler"),
                 GenerationSpec(PROMPT, seed=1, steps=2, sampler="Euler", control=ControlUnit(MAP, model=net, preprocessed=True)),
                 GenerationSpec(PROMPT, seed=1, steps=2, sampler="Euler", init_image=MAP, control=ControlUnit(MAP, model=net, preprocessed=True))):
        generate(pipe, spec, hooks=[lambda call: None])
        assert {m.dtype for m in (pipe.unet, pipe.vae, pipe.text_encoder, net)} == {torch.bfloat16}, spec.mode


def _ramped(net):
    """The oracle of "My prompt is more important": a copy of ``net`` whose zero convolutions are scaled by
    diffusers' guess-mode ramp (10^-1 .. 1 over the down residuals and the middle one). A 1x1 convolution
    scaled by k gives k times its output, so plain diffusers with this copy at Balanced is the mode."""
    import copy

    ramped = copy.deepcopy(net)
    ramp = torch.logspace(-1, 0, len(ramped.controlnet_down_blocks) + 1)
    with torch.no_grad():
        for k, conv in zip(ramp, [*ramped.controlnet_down_blocks, ramped.controlnet_mid_block]):
            conv.weight.mul_(k)
            conv.bias.mul_(k)
    return ramped


@pytest.mark.parametrize("name", ["sd1", "sdxl"])
def test_my_prompt_is_more_important_equals_diffusers_with_ramped_zero_convolutions(loaded, name):
    pipe, directory = loaded(name)
    net = tiny_controlnet(pipe, seed=3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    unit = ControlUnit(MAP, "edges", model=net, scale=1.3, preprocessed=True, prompt_more_important=True)
    spec = GenerationSpec(PROMPT, negative_prompt=NEGATIVE, seed=6, steps=4, guidance=5.0, sampler="Euler", control=unit)
    ours = _px(generate(pipe, spec).images)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()) and "forward" not in vars(net)  # the user's net untouched
    with torch.no_grad():
        theirs = _px(_oracle(directory, name, _ramped(net))(
            image=MAP, controlnet_conditioning_scale=1.3, num_inference_steps=4, guidance_scale=5.0, width=64, height=64,
            generator=[torch.Generator().manual_seed(6)], **encode_prompts(pipe, PROMPT, NEGATIVE, 1, 1)).images)
    assert np.abs(ours - theirs).max() <= 1
    balanced = _px(generate(pipe, spec.replace(control=unit.replace(prompt_more_important=False))).images)
    guess = _px(generate(pipe, spec.replace(control=unit.replace(prompt_more_important=False), guess_mode=True)).images)
    assert np.abs(ours - balanced).max() > 3 and np.abs(ours - guess).max() > 3  # a third mode, not either of the others


def test_control_modes_that_cannot_run_are_refused(loaded):
    sd1, _ = loaded("sd1")
    unit = ControlUnit(MAP, "edges", model=tiny_controlnet(sd1), preprocessed=True, prompt_more_important=True)
    with pytest.raises(ValidationError, match="one Control Mode"):
        generate(sd1, GenerationSpec(PROMPT, seed=1, steps=2, control=unit, guess_mode=True))
    sd3, _ = loaded("sd3")
    with pytest.raises(ValidationError, match="Control Mode Balanced"):
        generate(sd3, GenerationSpec(PROMPT, seed=1, steps=2, control=unit.replace(model=tiny_controlnet(sd3))))
