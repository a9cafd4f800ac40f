"""The repair pass: a few low-strength denoising steps over dequantised latents before decoding (Bühlmann's fix).

Quantisation leaves the latents slightly off the manifold the decoder
knows; noising them a little and denoising back with the diffusion model
pulls them onto it. The loop is its own, not a pipeline call, because it
starts from latents (no encoder pass) and must be deterministic on every
device. The pipeline handed in is only read: its scheduler is copied from
its config, nothing on it is set or replaced.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..validation import POSITIVE_INT, SEED, Check, Interval, validate_fields

_PARTS = ("unet", "scheduler", "vae")


@dataclass(eq=False)
class Repair:
    """Like img2img from latents: noise them to ``strength`` of the way into the schedule, denoise back to 0.

    The pipeline's UNet and (a copy of its) scheduler run ``steps`` steps'
    worth of schedule under ``prompt`` (empty: unconditional). Noise comes
    from a CPU generator seeded with ``seed``, so the result is the same on
    every device. Call it with a batch of latents (N x C x h x w, unscaled,
    as the VAE's encoder gives them); pass it as ``repair=`` to
    :meth:`~sdlab.compression.latent.LatentCodec.decode_many`.
    """

    pipeline: Any = field(repr=False)
    strength: float = 0.04
    steps: int = 50
    prompt: str = ""
    seed: int = 0

    _parameter_constraints = {
        "pipeline": [Check(lambda p: all(hasattr(p, part) for part in _PARTS),
                           "a diffusers pipeline with a unet, a scheduler and a vae")],
        "strength": [Interval(float, 0, 1, closed="right")],
        "steps": [POSITIVE_INT],
        "prompt": [str],
        "seed": [SEED],
    }

    def __post_init__(self) -> None:
        validate_fields(self)

    def _timesteps(self, scheduler: Any) -> Any:
        """The last ``strength`` of the schedule (at least one step), with the scheduler told where it begins."""
        n_run = min(max(int(round(self.steps * self.strength)), 1), self.steps)
        begin = (self.steps - n_run) * scheduler.order
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        return scheduler.timesteps[begin:]

    def __call__(self, latents: np.ndarray) -> np.ndarray:
        import torch

        pipe = self.pipeline
        unet, vae = pipe.unet, pipe.vae
        device, dtype = next(unet.parameters()).device, next(unet.parameters()).dtype
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)  # a copy: the user's stays untouched
        scheduler.set_timesteps(self.steps, device=device)
        timesteps = self._timesteps(scheduler)
        scale = float(vae.config.scaling_factor)
        shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
        with torch.no_grad():
            embeds = pipe.encode_prompt([self.prompt] * len(latents), device, 1, False)[0].to(dtype)
            x = (torch.from_numpy(latents).to(device, dtype) - shift) * scale
            noise = torch.randn(x.shape, generator=torch.Generator("cpu").manual_seed(self.seed)).to(device, dtype)
            x = scheduler.add_noise(x, noise, timesteps[:1].repeat(len(x)))
            for t in timesteps:
                eps = unet(scheduler.scale_model_input(x, t), t, encoder_hidden_states=embeds).sample
                x = scheduler.step(eps, t, x).prev_sample
        return (x.float() / scale + shift).cpu().numpy()
