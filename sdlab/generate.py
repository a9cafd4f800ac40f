"""``generate(pipe, spec) -> Result``: the one way sdlab turns a spec into images.

It drives diffusers' own pipelines (txt2img, img2img, inpaint) built from the
loaded model's components, so the shapes world and real SD checkpoints take
the same path. sdlab adds what a researcher needs around the call:

- seeds: noise for image k of a batch comes from its own CPU generator seeded
  ``seed + k``, so image k equals the single image made with that seed, on any
  device (REFERENCE.md, "Seeds");
- samplers by A1111 name, built fresh for each call from the model's
  scheduler config (flow-matching models get flow samplers);
- the pipeline handed in is never changed: each call runs a pipeline that
  shares its components but holds its own scheduler and, when hooks are
  given, a :class:`~sdlab.denoiser.Denoiser` around the UNet/transformer
  (the per-step hook that tracing and per-sample guidance share);
- 9-channel inpainting models run text-to-image and img2img as A1111 and
  diffusers do: through their inpainting pipeline, with a full mask;
- A1111 prompt weighting (``sdlab.prompts``) for CLIP-conditioned models;
- inpainting that pastes the original back outside the (blurred) mask, as
  A1111 does, and outpainting as inpainting of an extended canvas;
- a ``callback(done, total)`` per step that may raise ``Cancelled``.
"""
from __future__ import annotations

import contextlib
import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .errors import ValidationError
from .images import load_rgb
from .models import ModelInfo, model_info, share_pipeline
from .progress import Callback
from .samplers import make_scheduler, scheduler_config
from .spec import GenerationSpec, check_size


@dataclass
class Result:
    """Images, the fully resolved spec of each (its own seed), and timings in seconds."""

    images: list[Image.Image]
    specs: list[GenerationSpec]
    timings: dict = field(default_factory=dict)
    model: ModelInfo | None = None
    scheduler: str = ""  # the diffusers scheduler class the sampler ran as
    control_maps: list = field(default_factory=list)  # the condition maps the ControlNets (or depth2img) read

    def save(self, out_dir: str | Path) -> list[Path]:
        """Write each image as a PNG carrying its A1111 ``parameters`` chunk; never overwrites."""
        from .metadata import save_png

        return [save_png(image, spec, out_dir) for image, spec in zip(self.images, self.specs)]

    def arrays(self) -> np.ndarray:
        """The images as one uint8 array (N, H, W, 3)."""
        return np.stack([np.asarray(im.convert("RGB")) for im in self.images])


def size_factor(pipe) -> int:
    """Width and height must be multiples of this for the model: its VAE's downsampling, times a transformer's patch."""
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    if getattr(pipe, "unet", None) is None and getattr(pipe, "transformer", None) is not None:
        factor *= int(pipe.transformer.config.patch_size)
    return factor


def denoiser_name(pipe) -> str:
    """``unet`` or ``transformer`` (SD 3's MMDiT): the component that predicts the noise."""
    return "unet" if getattr(pipe, "unet", None) is not None else "transformer"


def min_size(pipe) -> int:
    """The smallest width/height the model can take (one latent pixel per UNet level, one patch for a transformer)."""
    if denoiser_name(pipe) == "transformer":
        return size_factor(pipe)
    return size_factor(pipe) * 2 ** (len(pipe.unet.config.block_out_channels) - 1)


def native_size(pipe) -> int:
    """The size the model was trained at (diffusers' own default when none is given)."""
    return int(getattr(pipe, denoiser_name(pipe)).config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))


def needs_mask(pipe) -> bool:
    """A 9-channel inpainting UNet (latent + mask + masked image): every mode goes through inpainting."""
    unet = getattr(pipe, "unet", None)
    return unet is not None and int(unet.config.in_channels) == 9


def needs_depth(pipe) -> bool:
    """A 5-channel depth2img UNet (latent + depth, SD 2 depth): it runs only with a depth map (sdlab.control)."""
    unet = getattr(pipe, "unet", None)
    return unet is not None and int(unet.config.in_channels) == 5


def prepare(pipe, spec: GenerationSpec) -> GenerationSpec:
    """Resolve defaults and a seed, and check the spec against the model."""
    info = model_info(pipe)
    side = native_size(pipe)
    spec = spec.with_seed().resolved({"width": side, "height": side, **info.defaults})
    if spec.model is None or spec.model_hash is None:
        spec = spec.replace(model=spec.model or info.name, model_hash=spec.model_hash or info.hash)
    factor, smallest = size_factor(pipe), min_size(pipe)
    for name in ("width", "height"):
        value = getattr(spec, name)
        check_size(name, value, factor)
        if value < smallest:
            raise ValidationError(f"{name}: {value} is too small for {info.name}; the smallest valid size is {smallest}")
    return spec


def generators(seed: int, n: int) -> list:
    """One CPU generator per image: seeds seed..seed+n-1, device-independent noise."""
    import torch

    return [torch.Generator("cpu").manual_seed(seed + k) for k in range(n)]


def _mask_image(mask, size: tuple[int, int], blur: int) -> Image.Image:
    """The inpainting mask as L mode, white = repaint, checked against the image size and blurred."""
    array = load_rgb(mask).mean(axis=2)
    if (array.shape[1], array.shape[0]) != size:
        raise ValidationError(f"mask: size {array.shape[1]}x{array.shape[0]} must equal the image size {size[0]}x{size[1]}")
    image = Image.fromarray(np.where(array > 127, 255, 0).astype(np.uint8), "L")
    return image.filter(ImageFilter.GaussianBlur(blur)) if blur else image


def outpaint_canvas(image: Image.Image, margins: tuple[int, int, int, int], blur: int) -> tuple[Image.Image, Image.Image]:
    """Extend ``image`` by ``margins`` (left, top, right, bottom): the canvas, filled with
    the nearest edge pixels, and the mask (white = new area) overlapping the seam by ``blur`` pixels."""
    left, top, right, bottom = margins
    src = np.asarray(image.convert("RGB"))
    canvas = np.pad(src, ((top, bottom), (left, right), (0, 0)), mode="edge")
    mask = np.full(canvas.shape[:2], 255, np.uint8)
    h, w = src.shape[:2]
    inset = blur
    mask[top + (inset if top else 0) : top + h - (inset if bottom else 0), left + (inset if left else 0) : left + w - (inset if right else 0)] = 0
    return Image.fromarray(canvas), Image.fromarray(mask, "L")


TEXT_TO_IMAGE = ("StableDiffusionPipeline", "StableDiffusionXLPipeline", "StableDiffusion3Pipeline")


def call_pipeline(pipe, mode: str, scheduler, hooks=(), guidance: float = 1.0, controlnet=None):
    """A pipeline for ``mode`` sharing ``pipe``'s components (no copy of the weights), with this
    call's ``scheduler``, when ``hooks`` are given a :class:`~sdlab.denoiser.Denoiser`, and with
    ``controlnet`` (a model or a list) diffusers' ControlNet pipeline for the mode.
    ``pipe`` itself is left as it was."""
    parts: dict = {"scheduler": scheduler}
    if hooks:
        from .denoiser import Denoiser

        name = denoiser_name(pipe)
        parts[name] = Denoiser(getattr(pipe, name), list(hooks), scheduler, guidance)
    own = needs_depth(pipe) or mode == "txt2img" and type(pipe).__name__ in TEXT_TO_IMAGE  # depth2img has no auto class;
    runner = share_pipeline(type(pipe) if own else _auto(mode), pipe, **parts)  # a text-to-image pipeline is its own txt2img class
    if controlnet is not None:  # from the mode's own pipeline, whose constructor settled the scheduler's config
        runner = share_pipeline(_auto(mode), runner, controlnet=controlnet)  # (SD 1.x DDIM without clipping), as without control
    runner.set_progress_bar_config(disable=True)
    return runner


def _auto(mode: str):
    """diffusers' auto pipeline class for ``mode`` (importing them reads every pipeline's mapping: about a second)."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

    return {"txt2img": AutoPipelineForText2Image, "img2img": AutoPipelineForImage2Image}.get(mode, AutoPipelineForInpainting)


def _blank_canvas(width: int, height: int) -> tuple[dict, str]:
    """Inputs that make a 9-channel inpainting model draw from scratch: a full mask over a grey image
    (A1111's txt2img conditioning for inpainting models: the masked image is all 0.5)."""
    return {"image": Image.new("RGB", (width, height), (127, 127, 127)), "mask_image": Image.new("L", (width, height), 255),
            "strength": 1.0, "width": width, "height": height}, "inpaint"


def _check_sampler_mode(scheduler, spec: GenerationSpec, mode: str) -> None:
    from .denoiser import is_flow

    if mode != "txt2img" and is_flow(scheduler) and not hasattr(scheduler, "scale_noise"):
        raise ValidationError(
            f"sampler: {spec.sampler!r} cannot start from an init image on a flow-matching model; valid for {spec.mode}: Euler, Heun"
        )


def generate(pipe, spec: GenerationSpec, callback: Callback | None = None, hooks=(), adapters=None) -> Result:
    """Make ``spec.batch_size`` images; image k uses seed ``spec.seed + k``.

    ``hooks`` (see :mod:`sdlab.denoiser`) see, and may change, every evaluation of the denoiser.
    ``adapters`` (:class:`sdlab.adapters.networks.AdapterFolders`): where the prompt's ``<lora:NAME:W>``
    tags and embedding names are found; applied to this call only (:mod:`sdlab.adapters.apply`) and
    recorded as A1111's ``Lora hashes`` / ``TI hashes``.
    """
    from .adapters.apply import prepare_adapters
    from .prompts import encode_prompts

    started = time.perf_counter()
    # 1. resolve the spec against the model: defaults, seed, size
    spec = prepare(pipe, spec)
    mode, n = spec.mode, spec.batch_size
    kwargs: dict = dict(
        num_inference_steps=spec.steps, guidance_scale=spec.guidance,
        generator=generators(spec.seed, n), output_type="pil",
    )

    # 2. the mode's inputs: init image, mask, extended canvas
    init = overlay_mask = None
    if mode in ("img2img", "inpaint", "outpaint"):
        init = Image.fromarray(load_rgb(spec.init_image))
        if mode == "outpaint":
            init, mask = outpaint_canvas(init, spec.outpaint, spec.mask_blur)
            overlay_mask = mask.filter(ImageFilter.GaussianBlur(spec.mask_blur)) if spec.mask_blur else mask
            kwargs["mask_image"] = mask
        elif mode == "inpaint":
            overlay_mask = _mask_image(spec.mask, init.size, spec.mask_blur)
            kwargs["mask_image"] = _mask_image(spec.mask, init.size, 0)
        for name, value in (("width", init.size[0]), ("height", init.size[1])):
            check_size(f"{name} of the {'extended ' if mode == 'outpaint' else ''}init image", value, size_factor(pipe))
        spec = spec.replace(width=init.size[0], height=init.size[1])
        kwargs["image"] = init
        kwargs["strength"] = 1.0 if mode == "outpaint" else spec.strength
        if mode in ("inpaint", "outpaint"):
            kwargs.update(width=spec.width, height=spec.height)
        if mode != "img2img" and spec.strength <= 0:
            raise ValidationError("strength: inpainting with strength 0 changes nothing; use a value in (0, 1]")
    else:
        kwargs.update(width=spec.width, height=spec.height)
    run_mode = mode
    if needs_mask(pipe) and mode == "txt2img":
        extra, run_mode = _blank_canvas(spec.width, spec.height)
        kwargs.update(extra)
    elif needs_mask(pipe) and mode == "img2img":
        kwargs.update(mask_image=Image.new("L", init.size, 255), width=spec.width, height=spec.height)
        run_mode = "inpaint"

    if run_mode == "inpaint":  # one image and mask per seed: the pipeline draws each VAE sample from that image's
        kwargs["image"], kwargs["mask_image"] = [kwargs["image"]] * n, [kwargs["mask_image"]] * n  # generator (image k = seed + k)

    control = None
    if spec.control or needs_depth(pipe):  # ControlNets, or depth2img's depth map: their maps and arguments
        from .control.apply import control_call

        control = control_call(pipe, spec, run_mode)
        kwargs.update(control.kwargs)
        spec = spec.replace(control=control.units)

    # 3. this call's scheduler and pipeline (``pipe`` stays as it was), and the prompts
    scheduler = make_scheduler(spec.sampler, scheduler_config(pipe), seeds=[spec.seed + k for k in range(n)])
    _check_sampler_mode(scheduler, spec, run_mode)
    used = prepare_adapters(pipe, spec, adapters)  # LoRAs and embeddings for this call only
    spec = used.record(spec)
    runner = call_pipeline(used.pipe, run_mode, scheduler, hooks, spec.guidance, control.controlnet if control else None)
    if run_mode == "img2img" and "width" in inspect.signature(runner.__call__).parameters:
        kwargs.update(width=spec.width, height=spec.height)  # SD 3's img2img resizes the init to these (default: native)
    kwargs.update(encode_prompts(used.pipe, used.prompt, used.negative_prompt, n, spec.clip_skip))
    kwargs["callback_on_step_end"] = _step_end(callback, spec.steps if run_mode == "txt2img" else None)

    # 4. denoise and decode
    before_call = time.perf_counter()
    if mode == "img2img" and int(spec.steps * spec.strength) < 1:
        images = [init.copy() for _ in range(n)]  # no denoising step left to run: the image is unchanged
    else:
        with control.rng(spec.seed, runner.device) if control else contextlib.nullcontext():
            images = runner(**kwargs).images
    after_call = time.perf_counter()

    # 5. keep every pixel outside the mask, as A1111 does
    if overlay_mask is not None:
        alpha = (np.asarray(overlay_mask, np.float32) / 255.0)[..., None]
        original = np.asarray(init, np.float32)
        images = [Image.fromarray(np.round(alpha * np.asarray(im, np.float32) + (1 - alpha) * original).astype(np.uint8)) for im in images]
    specs = [spec.replace(seed=spec.seed + k, batch_size=1) for k in range(n)]
    timings = {"total": time.perf_counter() - started, "pipeline": after_call - before_call, "per_image": (after_call - before_call) / n}
    return Result(images=images, specs=specs, timings=timings, model=model_info(pipe), scheduler=type(scheduler).__name__,
                  control_maps=control.maps if control else [])


def _step_end(callback: Callback | None, total: int | None):
    """The pipeline's step-end callback: advance the hooked denoiser's step index, report progress."""

    def on_step_end(runner, i, _t, tensors):
        denoiser = getattr(runner, denoiser_name(runner))
        if hasattr(denoiser, "step_index"):
            denoiser.step_index = i + 1
        if callback is not None:
            callback(i + 1, total or runner.num_timesteps)
        return tensors

    return on_step_end


def _batch_key(spec: GenerationSpec) -> tuple:
    return (spec.steps, spec.sampler, spec.width, spec.height, spec.clip_skip, bool(spec.control))


def generate_many(
    pipe, specs: list[GenerationSpec], max_batch: int = 32, callback: Callback | None = None, hooks=(), adapters=None
) -> list[tuple[Image.Image, GenerationSpec]]:
    """Text-to-image for many specs, batched: specs that share steps, sampler, size and
    clip skip run in one pipeline call, each image from its own seed's generator, its own
    prompt and its own guidance (:func:`sdlab.denoiser.per_sample_guidance`, a hook placed
    before ``hooks``). Returns (image, resolved spec) in input order; each image equals
    ``generate``'s for its spec.

    ``callback(done, total)`` counts images. ``adapters`` (:class:`sdlab.adapters.networks.AdapterFolders`)
    as in :func:`generate`: specs whose prompts name the same LoRAs at the same weights, hypernetwork and
    embeddings share one adapted pipeline, built once, and batch on it; each resolved spec records their hashes.
    """
    from .adapters.apply import adapter_signature, prepare_adapters
    from .adapters.networks import preflight

    for prompt in dict.fromkeys(spec.prompt for spec in specs):  # each distinct prompt once (folders are listed anew)
        preflight(prompt, adapters)  # a LoRA tag without its folder or file: refused before any image
    resolved = []
    for spec in specs:
        if spec.mode != "txt2img":
            raise ValidationError(f"generate_many: only text-to-image specs batch; got a {spec.mode} spec (use generate)")
        spec = prepare(pipe, spec)
        resolved += [spec.replace(seed=spec.seed + k, batch_size=1) for k in range(spec.batch_size)]
    signatures: dict[tuple[str, str], tuple | None] = {}  # (prompt, negative) -> the adapters it names (None: none)
    order: dict[tuple, list[int]] = {}
    for i, spec in enumerate(resolved):
        key = (spec.prompt, spec.negative_prompt)
        if key not in signatures:
            signatures[key] = adapter_signature(spec, adapters)
        order.setdefault(_batch_key(spec) + (signatures[key],), []).append(i)
    out: list[Image.Image | None] = [None] * len(resolved)
    embeddings: dict[tuple[str, str], dict] = {}
    done = 0
    for key, indices in order.items():
        used = None if key[-1] is None else prepare_adapters(pipe, resolved[indices[0]], adapters)  # built once for the group
        for start in range(0, len(indices), max_batch):
            chunk = [resolved[i] for i in indices[start : start + max_batch]]
            if used is None:
                images = _chunk_images(pipe, chunk, hooks, embeddings)
            else:  # the group's pipeline, each prompt as it encodes there; the hashes recorded as generate records them
                images = _chunk_images(used.pipe, [s.replace(prompt=p, negative_prompt=n) for s in chunk
                                                   for p, n in [used.rewrite(s.prompt, s.negative_prompt)]], hooks, {})
                for i in indices[start : start + max_batch]:
                    resolved[i] = used.record(resolved[i])
            for i, image in zip(indices[start : start + max_batch], images):
                out[i] = image
            done += len(chunk)
            if callback is not None:
                callback(done, len(resolved))
    return list(zip(out, resolved))


def _chunk_images(pipe, chunk: list[GenerationSpec], hooks, embeddings: dict) -> list[Image.Image]:
    """One chunk of :func:`generate_many` (same steps, sampler, size, clip skip): one batched pipeline call, or one
    ``generate`` each where a batch cannot hold them; ``embeddings`` caches each (prompt, negative)'s encoding."""
    import torch

    from .denoiser import per_sample_guidance
    from .prompts import encode_prompts

    first = chunk[0]
    parts = []
    for spec in chunk:
        key = (spec.prompt, spec.negative_prompt)
        if key not in embeddings:
            embeddings[key] = encode_prompts(pipe, spec.prompt, spec.negative_prompt, 1, first.clip_skip)
        parts.append(embeddings[key])
    shapes = {tuple((k, tuple(v.shape)) for k, v in p.items()) for p in parts if all(torch.is_tensor(v) for v in p.values())}
    if first.control or needs_depth(pipe) or len(shapes) != 1 or len([p for p in parts if all(torch.is_tensor(v) for v in p.values())]) != len(parts):
        # controlled specs, prompts of different chunk counts (or text handed to the pipeline): one call each
        images = [generate(pipe, spec, hooks=hooks).images[0] for spec in chunk]
    else:
        weights = [float(s.guidance) for s in chunk]
        same = len(set(weights)) == 1
        scale = weights[0] if same else max(2.0, max(weights))
        call_hooks = list(hooks) if same else [per_sample_guidance(weights, scale), *hooks]
        scheduler = make_scheduler(first.sampler, scheduler_config(pipe), seeds=[s.seed for s in chunk])
        kwargs = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        kwargs.update(num_inference_steps=first.steps, guidance_scale=scale, width=first.width, height=first.height,
                      generator=[torch.Generator("cpu").manual_seed(s.seed) for s in chunk], output_type="pil",
                      callback_on_step_end=_step_end(None, first.steps))
        mode = "txt2img"
        if needs_mask(pipe):
            extra, mode = _blank_canvas(first.width, first.height)
            kwargs.update(extra, image=[extra["image"]] * len(chunk), mask_image=[extra["mask_image"]] * len(chunk))
        runner = call_pipeline(pipe, mode, scheduler, call_hooks, scale)
        images = runner(**kwargs).images
    return images
