"""Hires fix, as A1111 offers it: generate at the model's native size, upscale, then img2img at
the target size, so composition comes from the size the model knows and detail from the second pass.

A1111's parameters map one to one: ``hr_scale`` -> ``scale``, ``hr_upscaler`` -> ``upscaler``
(``lanczos``: the decoded image, resampled; ``latent``: the latents, resized bilinearly as A1111's
"Latent"), ``denoising_strength`` -> ``strength``, ``hr_second_pass_steps`` -> ``steps`` (None: the
first pass's). As in A1111 the second pass runs ``steps`` denoising steps whatever the strength (its
schedule is ``steps / strength`` long), uses the same seed, and the images' parameters keep the
first pass's size with ``Hires upscale``, ``Hires steps``, ``Hires upscaler`` and ``Denoising
strength`` beside it.

sdlab's generation takes images, not latents, so the ``latent`` upscaler encodes the first pass's
image with the model's VAE (its latent mean), resizes those latents and decodes them: one VAE round
trip that A1111's path does not make. Both passes go through :func:`sdlab.generate.generate`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from PIL import Image

from .errors import ValidationError
from .generate import Result, generate, prepare, size_factor
from .progress import Callback
from .spec import GenerationSpec
from .validation import POSITIVE_INT, Interval, Options, invalid, validate_params

UPSCALERS = {"lanczos": "Lanczos", "latent": "Latent"}  # sdlab name -> the name A1111 writes
DEFAULT_STRENGTH = 0.7  # A1111's default denoising strength for the hires pass
HIRES_CONSTRAINTS = {
    "scale": [Interval(float, 1, 8, closed="right")],
    "strength": [Interval(float, 0, 1, closed="right")],
    "upscaler": [Options(UPSCALERS)],
    "steps": [POSITIVE_INT, None],
}


@dataclass
class HiresResult(Result):
    """A :class:`~sdlab.generate.Result` of the second pass, with the first pass beside it."""

    first_pass: Result | None = None


def hires_size(pipe, width: int, height: int, scale: float) -> tuple[int, int]:
    """The second pass's size: the first pass's times ``scale``, down to the model's size multiple."""
    factor = size_factor(pipe)
    return int(width * scale) // factor * factor, int(height * scale) // factor * factor


def schedule_length(steps: int, strength: float) -> int:
    """The ``num_inference_steps`` for which img2img at ``strength`` runs exactly ``steps`` steps
    (diffusers runs ``int(n * strength)`` of ``n``), as A1111's hires pass does."""
    n = max(steps, math.ceil(steps / strength - 1e-9))
    while int(n * strength) < steps:
        n += 1
    return n


def upscale(pipe, image: Image.Image, size: tuple[int, int], upscaler: str = "lanczos") -> Image.Image:
    """``image`` resized to ``size`` (width, height) by ``upscaler`` (see the module's docstring)."""
    validate_params({"upscaler": upscaler}, HIRES_CONSTRAINTS)
    if upscaler == "lanczos":
        return image.convert("RGB").resize(size, Image.LANCZOS)
    import numpy as np
    import torch
    import torch.nn.functional as F

    from .images import from_tensor, to_tensor
    from .precision import decoding_vae

    vae = decoding_vae(pipe)
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    with torch.no_grad():
        x = to_tensor(np.asarray(image.convert("RGB"))).to(vae.device, vae.dtype)
        z = vae.encode(x).latent_dist.mode()
        z = F.interpolate(z, size=(size[1] // factor, size[0] // factor), mode="bilinear", align_corners=False)
        decoded = vae.decode(z).sample.float()
    return Image.fromarray(from_tensor(decoded)[0])


def hires_extra(scale: float, strength: float, upscaler: str, steps: int | None) -> dict:
    """The keys A1111 writes for a hires-fixed image (``Hires steps`` only when it was set)."""
    extra = {"Hires upscale": f"{scale:g}"}
    if steps is not None:
        extra["Hires steps"] = str(steps)
    return {**extra, "Hires upscaler": UPSCALERS[upscaler], "Denoising strength": f"{strength:g}"}


def hires_settings(spec: GenerationSpec) -> dict | None:
    """The hires-fix parameters recorded in a spec's ``extra`` (read back from a PNG), as keyword
    arguments for :func:`hires_fix`; None when the image was not hires-fixed."""
    extra = spec.extra
    if "Hires upscale" not in extra:
        return None
    names = {v.lower(): k for k, v in UPSCALERS.items()}
    upscaler = str(extra.get("Hires upscaler", "Latent")).lower()
    if upscaler not in names:
        raise invalid("Hires upscaler", extra["Hires upscaler"], ", ".join(UPSCALERS.values()))
    steps = int(extra["Hires steps"]) if "Hires steps" in extra and int(extra["Hires steps"]) > 0 else None
    return {"scale": float(extra["Hires upscale"]), "strength": float(extra.get("Denoising strength", spec.strength)),
            "upscaler": names[upscaler], "steps": steps}


def hires_fix(
    pipe, spec: GenerationSpec, scale: float = 2.0, strength: float = DEFAULT_STRENGTH, upscaler: str = "lanczos",
    steps: int | None = None, callback: Callback | None = None, hooks=(),
) -> HiresResult:
    """Text-to-image at ``spec``'s size (the model's native size when unset), upscaled by ``scale``
    with ``upscaler``, then img2img at ``strength`` for ``steps`` steps (None: the first pass's), each
    image with its own seed in both passes. ``callback(done, total)`` counts steps over both passes."""
    validate_params({"scale": scale, "strength": strength, "upscaler": upscaler, "steps": steps}, HIRES_CONSTRAINTS)
    if spec.mode != "txt2img":
        raise invalid("spec", f"a {spec.mode} spec", "a text-to-image spec (hires fix is a second pass after text-to-image)")
    started = time.perf_counter()
    spec = prepare(pipe, spec)  # one seed and size for both passes
    target = hires_size(pipe, spec.width, spec.height, scale)
    if target[0] < spec.width or target[1] < spec.height or target == (spec.width, spec.height):
        raise invalid("scale", scale, f"a factor that enlarges {spec.width}x{spec.height} by at least {size_factor(pipe)} pixels")
    second_steps = steps or spec.steps
    length = schedule_length(second_steps, strength)
    total = spec.steps + spec.batch_size * second_steps

    def progress(offset: int):
        return None if callback is None else (lambda d, _t: callback(offset + d, total))

    first = generate(pipe, spec, callback=progress(0), hooks=hooks)
    images, specs = [], []
    seconds = time.perf_counter() - started
    for k, (image, one) in enumerate(zip(first.images, first.specs)):
        upscaled = upscale(pipe, image, target, upscaler)
        second = generate(pipe, one.replace(init_image=upscaled, strength=strength, steps=length),
                          callback=progress(spec.steps + k * second_steps), hooks=hooks)
        if second.images[0].size != target:  # never hand back a silently wrong size
            from .models import family

            raise ValidationError(f"model: img2img on this {family(pipe)} model returned {second.images[0].size[0]}x{second.images[0].size[1]} "
                                  f"for a {target[0]}x{target[1]} image, so the hires fix cannot reach that size on it")
        images.append(second.images[0])
        specs.append(one.replace(strength=strength, extra={**one.extra, **hires_extra(scale, strength, upscaler, steps)}))
    elapsed = time.perf_counter() - started
    timings = {"total": elapsed, "first_pass": seconds, "second_pass": elapsed - seconds, "per_image": elapsed / len(images)}
    return HiresResult(images=images, specs=specs, timings=timings, model=second.model, scheduler=second.scheduler, first_pass=first)
