"""One hook mechanism around the denoiser, for everything that looks inside or steers the loop.

k-diffusion's samplers hand a per-step callback one dict (``x``, ``i``,
``sigma``, ``denoised``) so anyone can look inside without patching the
model. sdlab does the same on top of diffusers' pipelines: for each call,
:func:`sdlab.generate.generate` builds a pipeline that shares the user's
components but holds a fresh scheduler and, when hooks are given, a
:class:`Denoiser` -- a thin module around the user's UNet or transformer that
hands every evaluation to the hooks. The user's pipeline and model are never
changed, and hooks combine: per-sample guidance, tracing and (later) LoRA
scales or ControlNet residuals are each one hook in a list.

A hook is ``hook(call) -> Tensor | None`` where ``call`` is a dict:

- ``x``: the model input, as the sampler scaled it (the CFG batch: unconditional half first),
- ``t``: the timestep tensor, ``i``: the step index (0-based),
- ``pred``: the model output (for CFG, both halves),
- ``first_order``: False on a second-order sampler's second evaluation in a step,
- ``scheduler``: the call's scheduler, ``guidance``: the guidance scale the pipeline applies.

Returning a tensor replaces ``pred`` for the hooks after it and for the
sampler. :func:`step_view` turns a call into k-diffusion's view: x, sigma,
the guided noise prediction and ``denoised`` (the predicted clean latent).
"""
from __future__ import annotations

from typing import Callable

import torch

from .prediction import eps_and_x0

Hook = Callable[[dict], "torch.Tensor | None"]


class Denoiser(torch.nn.Module):
    """The pipeline's UNet or transformer with ``hooks`` run after each evaluation.

    Attribute reads the pipeline makes (``config``, ``dtype``, ``device``,
    ``add_embedding``...) go to the wrapped model, so diffusers' pipelines
    drive it exactly as they drive the model itself.
    """

    def __init__(self, model: torch.nn.Module, hooks: list[Hook], scheduler, guidance: float) -> None:
        super().__init__()
        self.model = model
        self.hooks = list(hooks)
        self.scheduler = scheduler
        self.guidance = float(guidance)
        self.step_index = 0  # advanced by the pipeline's step-end callback

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)

    def forward(self, *args, **kwargs):
        out = self.model(*args, **kwargs)
        pred = out.sample if hasattr(out, "sample") else out[0]
        x = kwargs.get("hidden_states", kwargs.get("sample", args[0] if args else None))
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        call = {"x": x, "t": t, "i": self.step_index, "pred": pred, "scheduler": self.scheduler,
                "guidance": self.guidance,
                "first_order": bool(getattr(self.scheduler, "state_in_first_order", True))}
        for hook in self.hooks:
            replaced = hook(call)
            if replaced is not None:
                call["pred"] = replaced
        if call["pred"] is pred:
            return out
        if hasattr(out, "sample"):
            out.sample = call["pred"]
            return out
        return (call["pred"], *out[1:])


def per_sample_guidance(weights: list[float], scale: float) -> Hook:
    """A hook that makes a call run with ``guidance_scale=scale`` apply ``weights[k]`` to sample k.

    The pipeline computes u + scale (c - u) from the two CFG halves. Handing
    it c' = u + (w_k / scale)(c - u) instead of c gives u + w_k (c - u):
    guidance as a per-sample vector, so one batched call serves a whole
    guidance sweep. ``scale`` must be > 1 so that the pipeline runs CFG at all.
    """
    ratio = torch.tensor([w / scale for w in weights], dtype=torch.float32)

    def hook(call: dict) -> torch.Tensor:
        pred = call["pred"]
        uncond, cond = pred.chunk(2)
        r = ratio.to(pred.device, pred.dtype).view(-1, *([1] * (pred.ndim - 1)))
        return torch.cat([uncond, uncond + r * (cond - uncond)])

    return hook


def is_flow(scheduler) -> bool:
    """True for flow-matching samplers (SD 3): x_t = (1 - s) x0 + s eps and the model predicts eps - x0."""
    config = scheduler.config
    return type(scheduler).__name__.startswith("FlowMatch") or config.get("prediction_type") == "flow_prediction"


def holds_sigma(scheduler) -> bool:
    """True for samplers whose latents are x = x0 + sigma eps (k-diffusion style: Euler, Heun, LMS, ...)."""
    return (not is_flow(scheduler) and getattr(scheduler, "sigmas", None) is not None
            and float(getattr(scheduler, "init_noise_sigma", 1.0)) != 1.0)


def _current_sigma(scheduler, step_index: int) -> float:
    # the scheduler's own index: second-order samplers interleave their sigma arrays
    index = scheduler.step_index if getattr(scheduler, "step_index", None) is not None else step_index
    return float(scheduler.sigmas[min(index, len(scheduler.sigmas) - 1)])


def step_view(call: dict) -> dict:
    """k-diffusion's view of one evaluation, per sample (float32, CPU, batch first).

    ``x``: the latent as the sampler holds it; ``sigma``: the noise level in the
    x = x0 + sigma eps parameterisation; ``eps_uncond``/``eps_cond``: the CFG
    halves as noise predictions whatever the model predicts; ``eps``: guided;
    ``denoised``: the predicted clean latent.
    """
    scheduler = call["scheduler"]
    pred = call["pred"].detach().float().cpu()
    z = call["x"].detach().float().cpu()
    t = call["t"]
    t = float(t.flatten()[0]) if torch.is_tensor(t) else float(t)
    guidance = call["guidance"]
    n = z.shape[0] // 2 if guidance > 1 else z.shape[0]  # diffusers runs the CFG batch only above 1
    z = z[-n:, : pred.shape[1]]  # the conditional half's latent (an inpainting UNet's input also holds mask and image)
    if is_flow(scheduler):
        s = _current_sigma(scheduler, call["i"])

        def convert(v):  # v = eps - x0 and z = (1 - s) x0 + s eps
            return z + (1 - s) * v, z - s * v

        x_t, sigma = z, s / max(1 - s, 1e-12)
    else:
        kind = scheduler.config.get("prediction_type", "epsilon")
        if holds_sigma(scheduler):
            sigma = _current_sigma(scheduler, call["i"])
            x_t, abar = z * (sigma**2 + 1) ** 0.5, 1.0 / (sigma**2 + 1)  # undo scale_model_input
        else:
            abar = float(scheduler.alphas_cumprod[int(round(t))])
            x_t, sigma = z, ((1 - abar) / abar) ** 0.5

        def convert(p):
            return eps_and_x0(p, z, abar, kind)

    if n != pred.shape[0]:  # the CFG batch: [unconditional (negative prompt), conditional]
        eps_uncond, x0_uncond = convert(pred[:n])
        eps_cond, x0_cond = convert(pred[n:])
        eps = eps_uncond + guidance * (eps_cond - eps_uncond)  # linear, so the same as guiding v
        denoised = x0_uncond + guidance * (x0_cond - x0_uncond)
    else:  # guidance <= 1: diffusers runs the conditional branch alone
        eps_uncond = eps_cond = eps = convert(pred)[0]
        denoised = convert(pred)[1]
    return {"x": x_t, "t": t, "i": call["i"], "sigma": sigma, "eps_uncond": eps_uncond, "eps_cond": eps_cond,
            "eps": eps, "denoised": denoised}
