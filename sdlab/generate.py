"""``generate(pipe, spec) -> Result``: the one way sdlab turns a spec into images.

It drives diffusers' own pipelines (txt2img, img2img, inpaint) built from the
loaded model's components, so the shapes world and real SD checkpoints take
the same path. sdlab adds what a researcher needs around the call:

- seeds: noise for image k of a batch comes from its own CPU generator seeded
  ``seed + k``, so image k equals the single image made with that seed, on any
  device (REFERENCE.md, "Seeds");
- samplers by A1111 name, built fresh from the model's scheduler config;
- A1111 prompt weighting (``sdlab.prompts``) for CLIP-conditioned models;
- inpainting that pastes the original back outside the (blurred) mask, as
  A1111 does, and outpainting as inpainting of an extended canvas;
- a ``callback(done, total)`` per step that may raise ``Cancelled``.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

from .errors import ValidationError
from .images import load_rgb
from .models import ModelInfo, model_info
from .samplers import make_scheduler, scheduler_config
from .spec import GenerationSpec, check_size

from .progress import Callback


@dataclass
class Result:
    """Images, the fully resolved spec of each (its own seed), and timings in seconds."""

    images: list[Image.Image]
    specs: list[GenerationSpec]
    timings: dict = field(default_factory=dict)
    model: ModelInfo | None = None

    def save(self, out_dir: str | Path) -> list[Path]:
        """Write each image as a PNG carrying its A1111 ``parameters`` chunk; never overwrites."""
        from .metadata import save_png

        return [save_png(image, spec, out_dir) for image, spec in zip(self.images, self.specs)]

    def arrays(self) -> np.ndarray:
        """The images as one uint8 array (N, H, W, 3)."""
        return np.stack([np.asarray(im.convert("RGB")) for im in self.images])


def size_factor(pipe) -> int:
    """Width and height must be multiples of this for the model (its VAE's downsampling)."""
    return int(getattr(pipe, "vae_scale_factor", 8))


def min_size(pipe) -> int:
    """The smallest width/height the model's UNet can take (one latent pixel per level)."""
    unet = getattr(pipe, "unet", None)
    levels = len(unet.config.block_out_channels) if unet is not None else 1
    return size_factor(pipe) * 2 ** (levels - 1)


def native_size(pipe) -> int:
    """The size the model was trained at (diffusers' own default when none is given)."""
    unet = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    return int(unet.config.sample_size) * size_factor(pipe)


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


def _pipeline_for(pipe, mode: str):
    """A diffusers pipeline for ``mode`` sharing ``pipe``'s components (no copy of the weights)."""
    if mode == "txt2img":
        return pipe
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    cls = AutoPipelineForImage2Image if mode == "img2img" else AutoPipelineForInpainting
    cached = getattr(pipe, f"_sdlab_{mode}", None)
    if cached is None:
        cached = cls.from_pipe(pipe)
        cached.set_progress_bar_config(disable=True)
        setattr(pipe, f"_sdlab_{mode}", cached)
    return cached


def generate(pipe, spec: GenerationSpec, callback: Callback | None = None) -> Result:
    """Make ``spec.batch_size`` images; image k uses seed ``spec.seed + k``."""
    from .prompts import encode_prompts

    started = time.perf_counter()
    spec = prepare(pipe, spec)
    mode = spec.mode
    runner = _pipeline_for(pipe, mode)
    runner.scheduler = make_scheduler(spec.sampler, scheduler_config(pipe))
    n = spec.batch_size
    kwargs: dict = dict(
        num_inference_steps=spec.steps, guidance_scale=spec.guidance,
        generator=generators(spec.seed, n), output_type="pil",
    )
    kwargs.update(encode_prompts(pipe, spec.prompt, spec.negative_prompt, n, spec.clip_skip))

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

    if callback is not None:
        total = spec.steps if mode == "txt2img" else None

        def on_step_end(_pipe, i, _t, tensors):
            callback(i + 1, total or _pipe.num_timesteps)
            return tensors

        kwargs["callback_on_step_end"] = on_step_end

    before_call = time.perf_counter()
    if mode == "img2img" and int(spec.steps * spec.strength) < 1:
        images = [init.copy() for _ in range(n)]  # no denoising step left to run: the image is unchanged
    else:
        images = runner(**kwargs).images
    after_call = time.perf_counter()
    if overlay_mask is not None:  # keep every pixel outside the mask, as A1111 does
        alpha = (np.asarray(overlay_mask, np.float32) / 255.0)[..., None]
        original = np.asarray(init, np.float32)
        images = [Image.fromarray(np.round(alpha * np.asarray(im, np.float32) + (1 - alpha) * original).astype(np.uint8)) for im in images]
    specs = [spec.replace(seed=spec.seed + k, batch_size=1) for k in range(n)]
    timings = {"total": time.perf_counter() - started, "pipeline": after_call - before_call, "per_image": (after_call - before_call) / n}
    return Result(images=images, specs=specs, timings=timings, model=model_info(pipe))


def _batch_key(spec: GenerationSpec) -> tuple:
    return (spec.steps, spec.sampler, spec.width, spec.height, spec.clip_skip)


@contextlib.contextmanager
def per_sample_guidance(pipe, weights: list[float], scale: float):
    """Make a pipeline called with ``guidance_scale=scale`` apply ``weights[i]`` to sample i.

    The pipeline computes u + scale (c - u) from the UNet's unconditional and
    conditional halves. Handing it c' = u + (w_i / scale)(c - u) instead of c
    gives u + w_i (c - u): classifier-free guidance with a per-sample vector,
    so one batched call serves a whole guidance sweep. ``scale`` must be > 1
    (so the pipeline runs the CFG batch at all).
    """
    import torch

    unet = pipe.unet
    original = unet.forward
    ratio = torch.tensor([w / scale for w in weights], dtype=unet.dtype, device=unet.device)[:, None, None, None]

    def forward(sample, timestep, encoder_hidden_states, *args, **kwargs):
        out = original(sample, timestep, encoder_hidden_states, *args, **kwargs)
        pred = out.sample if hasattr(out, "sample") else out[0]
        uncond, cond = pred.chunk(2)
        rescaled = torch.cat([uncond, uncond + ratio * (cond - uncond)])
        if hasattr(out, "sample"):
            out.sample = rescaled
            return out
        return (rescaled, *out[1:])

    unet.forward = forward
    try:
        yield
    finally:
        unet.forward = original


def generate_many(
    pipe, specs: list[GenerationSpec], max_batch: int = 32, callback: Callback | None = None
) -> list[tuple[Image.Image, GenerationSpec]]:
    """Text-to-image for many specs, batched: specs that share steps, sampler, size and
    clip skip run in one pipeline call, each image from its own seed's generator, its own
    prompt and its own guidance (:func:`per_sample_guidance`). Returns (image, resolved
    spec) in input order.

    ``callback(done, total)`` counts images.
    """
    import torch

    from .prompts import encode_prompts

    resolved = []
    for spec in specs:
        if spec.mode != "txt2img":
            raise ValidationError(f"generate_many: only text-to-image specs batch; got a {spec.mode} spec (use generate)")
        spec = prepare(pipe, spec)
        resolved += [spec.replace(seed=spec.seed + k, batch_size=1) for k in range(spec.batch_size)]
    order: dict[tuple, list[int]] = {}
    for i, spec in enumerate(resolved):
        order.setdefault(_batch_key(spec), []).append(i)
    out: list[Image.Image | None] = [None] * len(resolved)
    embeddings: dict[tuple[str, str], dict] = {}
    done = 0
    for indices in order.values():
        for start in range(0, len(indices), max_batch):
            chunk = [resolved[i] for i in indices[start : start + max_batch]]
            first = chunk[0]
            parts = []
            for spec in chunk:
                key = (spec.prompt, spec.negative_prompt)
                if key not in embeddings:
                    embeddings[key] = encode_prompts(pipe, spec.prompt, spec.negative_prompt, 1, first.clip_skip)
                parts.append(embeddings[key])
            shapes = {tuple(p["prompt_embeds"].shape) for p in parts if "prompt_embeds" in p}
            if len(shapes) != 1:  # prompts of different chunk counts (or non-CLIP models): one call each
                images = [generate(pipe, spec).images[0] for spec in chunk]
            else:
                pipe.scheduler = make_scheduler(first.sampler, scheduler_config(pipe))
                weights = [float(s.guidance) for s in chunk]
                same = len(set(weights)) == 1
                scale = weights[0] if same else max(2.0, max(weights))
                guidance = contextlib.nullcontext() if same else per_sample_guidance(pipe, weights, scale)
                with guidance:
                    images = pipe(
                        prompt_embeds=torch.cat([p["prompt_embeds"] for p in parts]),
                        negative_prompt_embeds=torch.cat([p["negative_prompt_embeds"] for p in parts]),
                        num_inference_steps=first.steps, guidance_scale=scale,
                        width=first.width, height=first.height,
                        generator=[torch.Generator("cpu").manual_seed(s.seed) for s in chunk], output_type="pil",
                    ).images
            for i, image in zip(indices[start : start + max_batch], images):
                out[i] = image
            done += len(chunk)
            if callback is not None:
                callback(done, len(resolved))
    return list(zip(out, resolved))
