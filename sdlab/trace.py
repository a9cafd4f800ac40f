"""``trace(pipe, spec) -> Trace``: what happens inside the denoising loop, step by step.

diffusers' ``callback_on_step_end`` hands out latents but not the noise
prediction or x0 (diffusers issues 3579, 3938, 3599). sdlab records them by
wrapping the UNet during an ordinary :func:`~sdlab.generate.generate` call:
the pipeline, sampler and seeds are exactly those of ``generate``, so the
final image is the same image. Per step it keeps

- ``x_t``: the latent the sampler evaluated the model at (unscaled, as the sampler holds it),
- ``eps_uncond``, ``eps_cond``: the two halves of the CFG batch,
- ``eps``: the guided prediction  eps_uncond + w (eps_cond - eps_uncond),
  as noise whatever the model predicts (v-prediction models are converted,
  see :mod:`sdlab.prediction`),
- ``x0``: the predicted clean latent, (z - sqrt(1 - abar) eps) / sqrt(abar)
  with z the UNet's input. Samplers that hold x = x0 + sigma eps (Euler,
  Heun, LMS, DPM2, DPM++ SDE) feed it z = x / sqrt(sigma^2 + 1), which is
  the same formula with abar = 1 / (sigma^2 + 1); so x0 = x - sigma eps there.

Optionally, cross-attention maps softmax(Q K^T / sqrt(d)) per prompt token
(A1111 issue 4592, diffusers issue 3599), averaged over heads and layers.
Second-order samplers (Heun, DPM2) call the UNet twice per step: the first
call, at the step's own noise level (``state_in_first_order``), is the one recorded.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .generate import Result, generate
from .models import model_info
from .prediction import eps_and_x0
from .spec import GenerationSpec


@dataclass
class Step:
    """One denoising step (tensors on the CPU, batch dimension removed)."""

    index: int
    timestep: float
    sigma: float  # noise level in the x = x0 + sigma * eps parameterisation
    x_t: torch.Tensor
    eps_uncond: torch.Tensor
    eps_cond: torch.Tensor
    eps: torch.Tensor
    x0: torch.Tensor
    attention: torch.Tensor | None = None  # (tokens, h, w), sums to 1 over tokens at each position


@dataclass
class Trace:
    """Every step of one generation, and the resulting image."""

    spec: GenerationSpec
    steps: list[Step]
    result: Result
    tokens: list[str] = field(default_factory=list)
    preview_factors: dict | None = None

    @property
    def image(self) -> Image.Image:
        return self.result.images[0]

    def table(self):
        """One row per step: timestep, sigma, log-SNR, noise-prediction norm, CFG delta norm, x0 change."""
        import pandas as pd

        rows, previous = [], None
        for s in self.steps:
            rows.append({
                "step": s.index, "timestep": s.timestep, "sigma": s.sigma,
                "log_snr": float(-2 * np.log(max(s.sigma, 1e-12))),
                "eps_norm": float(s.eps.norm() / s.eps.numel() ** 0.5),
                "cfg_delta_norm": float((s.eps_cond - s.eps_uncond).norm() / s.eps.numel() ** 0.5),
                "x0_change": float((s.x0 - previous).norm() / s.x0.numel() ** 0.5) if previous is not None else np.nan,
            })
            previous = s.x0
        return pd.DataFrame(rows)

    def preview(self, index: int, what: str = "x0", method: str = "linear", pipe=None) -> Image.Image:
        """An RGB picture of step ``index``'s ``x0`` or ``x_t``, by linear factors or the full VAE (needs ``pipe``)."""
        latent = getattr(self.steps[index], what)
        return latent_preview(latent, self.preview_factors, pipe if method == "vae" else None, self.image.size)

    def filmstrip(self, what: str = "x0", every: int = 1, method: str = "linear", pipe=None, cell: int = 96) -> Image.Image:
        """Previews of ``what`` over the steps, left to right, labelled with the step number."""
        from .grid import labelled_grid

        picks = list(range(0, len(self.steps), every))
        if picks[-1] != len(self.steps) - 1:
            picks.append(len(self.steps) - 1)
        images = [self.preview(i, what, method, pipe) for i in picks]
        return labelled_grid([images], [str(i + 1) for i in picks], [what], "step", cell=cell)

    def save_animation(self, path, what: str = "x0", method: str = "linear", pipe=None, size: int = 256, ms: int = 120) -> None:
        """An animated GIF of the previews (the last frame is the final image)."""
        from .io import atomic_path

        frames = [self.preview(i, what, method, pipe).resize((size, size), Image.NEAREST) for i in range(len(self.steps))]
        frames.append(self.image.resize((size, size), Image.NEAREST))
        with atomic_path(path) as tmp:
            frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=ms, loop=0)


def latent_preview(latent: torch.Tensor, factors: dict | None, pipe=None, size: tuple[int, int] | None = None) -> Image.Image:
    """Decode one latent (C, h, w) to RGB: cheaply by linear factors, or exactly by the VAE when ``pipe`` is given."""
    if pipe is not None:
        vae = pipe.vae
        with torch.no_grad():
            x = vae.decode(latent[None].to(vae.device, vae.dtype) / vae.config.scaling_factor).sample[0]
        rgb = x.float().cpu()
    else:
        if factors is None:
            raise ValueError("no latent->RGB factors for this model: use method='vae'")
        m = torch.tensor(factors["latent_rgb_factors"], dtype=torch.float32)
        b = torch.tensor(factors.get("latent_rgb_bias", [0, 0, 0]), dtype=torch.float32)
        rgb = torch.einsum("chw,cr->rhw", latent.float(), m) + b[:, None, None]
        if size is not None:
            rgb = F.interpolate(rgb[None], size=(size[1], size[0]), mode="nearest")[0]
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(pixels)


class _AttentionRecorder:
    """An attention processor for cross-attention layers that keeps softmax(QK^T/sqrt(d)) per token."""

    def __init__(self) -> None:
        self.maps: list[torch.Tensor] = []  # this step's maps, one per layer: (tokens, h, w) of the conditional half
        self.hw: tuple[int, int] | None = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        batch, n, _ = hidden_states.shape
        query = attn.to_q(hidden_states)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        key, value = attn.to_k(context), attn.to_v(context)
        heads = attn.heads
        q, k, v = (attn.head_to_batch_dim(t) for t in (query, key, value))
        probs = attn.get_attention_scores(q, k, attention_mask)  # (batch*heads, n, tokens)
        out = attn.batch_to_head_dim(torch.bmm(probs, v))
        out = attn.to_out[1](attn.to_out[0](out))
        side = int(round(n ** 0.5))
        cond = probs.reshape(batch, heads, n, -1)[batch // 2 :].mean(dim=(0, 1))  # conditional half, mean over heads
        self.maps.append(cond.T.reshape(-1, side, side).detach().float().cpu())
        return out

    def pop_step(self, size: tuple[int, int]) -> torch.Tensor | None:
        """Average this step's layers at a common resolution (h, w) and reset."""
        if not self.maps:
            return None
        up = [F.interpolate(m[None], size=size, mode="bilinear", align_corners=False)[0] for m in self.maps]
        self.maps = []
        mean = torch.stack(up).mean(dim=0)
        return mean / mean.sum(dim=0, keepdim=True)


def _holds_sigma(scheduler) -> bool:
    """True for samplers whose latents are x = x0 + sigma eps (k-diffusion style: Euler, Heun, LMS, ...)."""
    return getattr(scheduler, "sigmas", None) is not None and float(getattr(scheduler, "init_noise_sigma", 1.0)) != 1.0


def _x_t_and_level(scheduler, model_input: torch.Tensor, timestep: float, step_index: int):
    """(x_t as the sampler holds it, alpha_bar, sigma) at the step whose UNet input is ``model_input``."""
    if _holds_sigma(scheduler):
        # the scheduler's own index: second-order samplers interleave their sigma arrays
        index = scheduler.step_index if getattr(scheduler, "step_index", None) is not None else step_index
        sigma = float(scheduler.sigmas[min(index, len(scheduler.sigmas) - 1)])
        x_t = model_input * (sigma**2 + 1) ** 0.5  # undo scale_model_input
        return x_t, 1.0 / (sigma**2 + 1), sigma
    abar = float(scheduler.alphas_cumprod[int(round(timestep))])
    return model_input, abar, ((1 - abar) / abar) ** 0.5


def trace(pipe, spec: GenerationSpec, attention: bool = False, callback=None) -> Trace:
    """Generate one image with ``spec`` and record every step (see the module docstring).

    With ``attention=False`` the image is bit-identical to ``generate(pipe, spec)``.
    With attention maps, cross-attention is computed explicitly (same formula,
    plain matmul instead of the fused kernel), so pixels may differ by rounding.
    """
    from .errors import ValidationError
    from .generate import prepare

    if spec.mode != "txt2img":
        raise ValidationError(f"trace: only text-to-image specs can be traced, got {spec.mode}")
    resolved = prepare(pipe, spec.replace(batch_size=1))
    guidance = float(resolved.guidance)
    unet = pipe.unet
    steps: list[Step] = []
    state = {"index": 0}
    recorder = _AttentionRecorder() if attention else None
    original_processors = unet.attn_processors if attention else None
    if attention:
        unet.set_attn_processor({name: (recorder if name.endswith("attn2.processor") else proc) for name, proc in original_processors.items()})
    original_forward = unet.forward

    def recording_forward(sample, timestep, encoder_hidden_states, *args, **kwargs):
        out = original_forward(sample, timestep, encoder_hidden_states, *args, **kwargs)
        if not getattr(pipe.scheduler, "state_in_first_order", True):  # Heun/DPM2's second evaluation
            if recorder is not None:
                recorder.maps = []
            return out
        pred = (out.sample if hasattr(out, "sample") else out[0]).detach().float().cpu()
        t = float(timestep.flatten()[0]) if torch.is_tensor(timestep) else float(timestep)
        z = sample.detach().float().cpu()[0]
        x_t, abar, sigma = _x_t_and_level(pipe.scheduler, z, t, state["index"])
        kind = pipe.scheduler.config.get("prediction_type", "epsilon")
        if pred.shape[0] == 2:  # the CFG batch: [unconditional (negative prompt), conditional]
            eps_uncond, eps_cond = (eps_and_x0(p, z, abar, kind)[0] for p in pred)
            eps = eps_uncond + guidance * (eps_cond - eps_uncond)  # linear, so the same as guiding v
        else:  # guidance <= 1: diffusers runs the conditional branch alone
            eps_uncond = eps_cond = eps = eps_and_x0(pred[0], z, abar, kind)[0]
        x0 = (z - (1 - abar) ** 0.5 * eps) / abar**0.5
        attn_map = recorder.pop_step((x_t.shape[-2], x_t.shape[-1])) if recorder is not None else None
        steps.append(Step(len(steps), t, sigma, x_t, eps_uncond, eps_cond, eps, x0, attn_map))
        return out

    def on_step(done: int, total: int) -> None:
        state["index"] = done
        if callback is not None:
            callback(done, total)

    unet.forward = recording_forward
    try:
        result = generate(pipe, resolved, callback=on_step)
    finally:
        unet.forward = original_forward
        if attention:
            unet.set_attn_processor(original_processors)
    tokens = []
    tok = getattr(pipe, "tokenizer", None)
    if tok is not None:
        ids = tok(resolved.prompt, add_special_tokens=True, truncation=True, max_length=tok.model_max_length).input_ids
        tokens = [tok.convert_ids_to_tokens(i).replace("</w>", "") for i in ids]
    return Trace(spec=result.specs[0], steps=steps, result=result, tokens=tokens, preview_factors=model_info(pipe).preview)


def decision_steps(tr: Trace, pipe) -> "object":
    """Per attribute, the first step from which the checker's reading of the decoded x0 no longer changes.

    Shapes world only (uses the attribute checker). Returns a tidy DataFrame:
    one row per step and attribute with the reading, plus ``decided_at``.
    """
    import pandas as pd

    from .mini import checker

    readings = [checker.check(np.asarray(tr.preview(i, "x0", "vae", pipe))) for i in range(len(tr.steps))]
    final = checker.check(np.asarray(tr.image))
    rows = []
    for attribute in checker.ATTRIBUTES:
        values = [r[attribute] for r in readings]
        decided = len(values)
        while decided > 0 and values[decided - 1] == final[attribute]:
            decided -= 1
        for i, value in enumerate(values):
            rows.append({"step": i + 1, "attribute": attribute, "reading": value, "final": final[attribute],
                         "decided_at": decided + 1 if decided < len(values) else None})
    return pd.DataFrame(rows)


def prompt_tokens(tr: Trace) -> list[tuple[int, str]]:
    """(position, token) of the prompt's own tokens: no start, end or padding tokens."""
    return [(i, t) for i, t in enumerate(tr.tokens) if t not in ("<|startoftext|>", "<|endoftext|>")]


def attention_figure(tr: Trace, step: int | None = None):
    """Cross-attention heat maps per prompt token, at one step or averaged over all (matplotlib figure)."""
    import matplotlib.pyplot as plt

    maps = [s.attention for s in tr.steps if s.attention is not None]
    if not maps:
        raise ValueError("this trace has no attention maps: trace(..., attention=True)")
    data = maps[step] if step is not None else torch.stack(maps).mean(dim=0)
    tokens = prompt_tokens(tr)
    fig, axes = plt.subplots(1, len(tokens) + 1, figsize=(1.6 * (len(tokens) + 1), 2.0))
    axes[0].imshow(tr.image)
    axes[0].set_title("image", fontsize=8)
    for ax, (position, token) in zip(axes[1:], tokens):
        ax.imshow(data[position].numpy(), cmap="magma", vmin=0)
        ax.set_title(token, fontsize=8)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"cross-attention per token ({'step ' + str(step + 1) if step is not None else 'mean over steps'}; share of attention, 0-1)", fontsize=9)
    fig.tight_layout()
    return fig


def schedules(pipe, samplers: list[str] | None = None, steps: int = 25):
    """The noise schedule each sampler walks: one row per sampler and step with sigma, alpha_bar, log-SNR."""
    import pandas as pd

    from .samplers import make_scheduler, sampler_names, scheduler_config

    rows = []
    base = scheduler_config(pipe)
    for name in samplers or sampler_names():
        sched = make_scheduler(name, base)
        sched.set_timesteps(steps)
        abar_all = sched.alphas_cumprod.float()
        for i, t in enumerate(sched.timesteps[:steps]):
            if _holds_sigma(sched):
                sigma = float(sched.sigmas[i])
                abar = 1.0 / (1.0 + sigma**2)
            else:
                abar = float(abar_all[int(t)])
                sigma = ((1 - abar) / abar) ** 0.5
            rows.append({"sampler": name, "step": i + 1, "timestep": float(t), "sigma": sigma, "alpha_bar": abar,
                         "log_snr": float(np.log(abar / (1 - abar)))})
    return pd.DataFrame(rows)


def schedules_figure(table):
    """alpha_bar, sigma and log-SNR against step for each sampler, on one figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for name, group in table.groupby("sampler", sort=False):
        for ax, column in zip(axes, ("alpha_bar", "sigma", "log_snr")):
            ax.plot(group["step"], group[column], label=name, linewidth=1)
    axes[0].set(xlabel="step", ylabel="alpha_bar (signal share)")
    axes[1].set(xlabel="step", ylabel="sigma (noise / signal)", yscale="log")
    axes[2].set(xlabel="step", ylabel="log SNR (nats)")
    axes[2].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def save_trace(tr: Trace, out_dir, pipe=None) -> dict:
    """Write the filmstrips, the animation, ``trace.parquet`` and (if recorded) attention maps; return the paths."""
    from pathlib import Path

    from .io import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    method = "linear" if tr.preview_factors else "vae"
    paths = {}
    for what in ("x_t", "x0"):
        path = out / f"filmstrip_{what}.png"
        with atomic_path(path) as tmp:
            tr.filmstrip(what, every=max(1, len(tr.steps) // 10), method=method, pipe=pipe).save(tmp)
        paths[f"filmstrip_{what}"] = path
    paths["animation"] = out / "x0.gif"
    tr.save_animation(paths["animation"], method=method, pipe=pipe)
    paths["table"] = out / "trace.parquet"
    with atomic_path(paths["table"]) as tmp:
        tr.table().to_parquet(tmp, index=False)
    tr.result.save(out)
    if any(s.attention is not None for s in tr.steps):
        paths["attention"] = out / "attention.png"
        fig = attention_figure(tr)
        with atomic_path(paths["attention"]) as tmp:
            fig.savefig(tmp, dpi=120)
    return paths
