"""``trace(pipe, spec) -> Trace``: what happens inside the denoising loop, step by step.

diffusers' ``callback_on_step_end`` hands out latents but not the noise
prediction or x0 (diffusers issues 3579, 3938, 3599). sdlab records them with
a hook on the denoiser (:mod:`sdlab.denoiser`) during an ordinary
:func:`~sdlab.generate.generate` call: the pipeline, sampler and seeds are
exactly those of ``generate``, so the final image is the same image. Per step
it keeps k-diffusion's view of the evaluation (:func:`sdlab.denoiser.step_view`):

- ``x_t``: the latent the sampler evaluated the model at (unscaled, as the sampler holds it),
- ``eps_uncond``, ``eps_cond``: the two halves of the CFG batch,
- ``eps``: the guided prediction  eps_uncond + w (eps_cond - eps_uncond),
  as noise whatever the model predicts (v-prediction and flow models are converted),
- ``x0``: the predicted clean latent.

Optionally, cross-attention maps softmax(Q K^T / sqrt(d)) per prompt token
(A1111 issue 4592, diffusers issue 3599), averaged over heads and layers, at
any aspect ratio. Second-order samplers (Heun, DPM2) call the model twice per
step: the first call, at the step's own noise level, is the one recorded.
Because the recorder is a hook, it combines with others: :func:`trace_many`
traces a batched sweep with per-sample guidance.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .denoiser import holds_sigma, step_view
from .errors import ValidationError
from .generate import Result, generate, generate_many, prepare
from .models import model_info
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
            raise ValidationError("method: 'linear' needs latent->RGB factors, which this model has none of; valid: 'vae'")
        m = torch.tensor(factors["latent_rgb_factors"], dtype=torch.float32)
        b = torch.tensor(factors.get("latent_rgb_bias", [0, 0, 0]), dtype=torch.float32)
        rgb = torch.einsum("chw,cr->rhw", latent.float(), m) + b[:, None, None]
        if size is not None:
            rgb = F.interpolate(rgb[None], size=(size[1], size[0]), mode="nearest")[0]
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(pixels)


def _level_size(latent_hw: tuple[int, int], tokens: int) -> tuple[int, int]:
    """(h, w) of a UNet level with ``tokens`` positions: the latent halved (rounding up) until it fits."""
    h, w = latent_hw
    while h * w > tokens:
        h, w = (h + 1) // 2, (w + 1) // 2
    if h * w != tokens:
        raise ValidationError(f"attention: a layer of {tokens} positions does not tile a {latent_hw[0]}x{latent_hw[1]} latent")
    return h, w


class _AttentionRecorder:
    """An attention processor for cross-attention layers that keeps softmax(QK^T/sqrt(d)) per token."""

    def __init__(self, samples: int, latent_hw: tuple[int, int]) -> None:
        self.samples = samples  # images in the call (the conditional half of the CFG batch)
        self.latent_hw = latent_hw
        self.maps: list[torch.Tensor] = []  # this step's maps, one per layer: (samples, tokens, h, w)

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
        h, w = _level_size(self.latent_hw, n)
        cond = probs.reshape(batch, heads, n, -1)[batch - self.samples :].mean(dim=1)  # conditional half, mean over heads
        self.maps.append(cond.transpose(1, 2).reshape(self.samples, -1, h, w).detach().float().cpu())
        return out

    def pop_step(self) -> torch.Tensor | None:
        """Average this step's layers at the latent's resolution: (samples, tokens, h, w); then reset."""
        if not self.maps:
            return None
        up = [F.interpolate(m, size=self.latent_hw, mode="bilinear", align_corners=False) for m in self.maps]
        self.maps = []
        mean = torch.stack(up).mean(dim=0)
        return mean / mean.sum(dim=1, keepdim=True)


class _JointAttentionRecorder:
    """SD 3's joint attention: the user's processor computes the output (so the image is unchanged);
    beside it, the image queries' softmax over the text keys is kept, as text->image maps per token."""

    def __init__(self, maps: _AttentionRecorder, original, grid_hw: tuple[int, int]) -> None:
        self.maps, self.original, self.grid_hw = maps, original, grid_hw

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        if encoder_hidden_states is not None:
            batch, n, _ = hidden_states.shape
            heads = attn.heads

            def split(x, norm):
                x = x.view(batch, -1, heads, x.shape[-1] // heads).transpose(1, 2)
                return norm(x) if norm is not None else x

            q = split(attn.to_q(hidden_states), attn.norm_q)
            keys = torch.cat([split(attn.to_k(hidden_states), attn.norm_k),
                              split(attn.add_k_proj(encoder_hidden_states), attn.norm_added_k)], dim=2)
            probs = torch.softmax(q @ keys.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)[..., n:]  # image -> text
            cond = probs[batch - self.maps.samples :].mean(dim=1)  # conditional half, mean over heads: (samples, n, tokens)
            cond = cond / cond.sum(dim=-1, keepdim=True)
            self.maps.maps.append(cond.transpose(1, 2).reshape(self.maps.samples, -1, *self.grid_hw).detach().float().cpu())
        return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)


@contextlib.contextmanager
def _recording_attention(model, recorder: _AttentionRecorder, patch: int = 1):
    """Swap recorders in for the text attention processors of ``model`` for one call, then put the user's back.

    UNets: the cross-attention layers (``attn2``). SD 3's transformer: the joint attention layers."""
    original = model.attn_processors
    if patch == 1:
        swapped = {name: (recorder if name.endswith("attn2.processor") else proc) for name, proc in original.items()}
    else:
        grid = (recorder.latent_hw[0] // patch, recorder.latent_hw[1] // patch)
        swapped = {name: (_JointAttentionRecorder(recorder, proc, grid) if name.endswith(".attn.processor") else proc)
                   for name, proc in original.items()}
    model.set_attn_processor(swapped)
    try:
        yield
    finally:
        model.set_attn_processor(original)


class StepRecorder:
    """A denoiser hook (:mod:`sdlab.denoiser`) that keeps every step's view, per sample."""

    def __init__(self, attention: _AttentionRecorder | None = None) -> None:
        self.views: list[dict] = []
        self.attention = attention

    def __call__(self, call: dict) -> None:
        if not call["first_order"]:  # Heun/DPM2's second evaluation
            if self.attention is not None:
                self.attention.maps = []
            return None
        view = step_view(call)
        view["attention"] = self.attention.pop_step() if self.attention is not None else None
        self.views.append(view)
        return None

    def steps(self, k: int) -> list[Step]:
        """Sample ``k``'s steps."""
        return [Step(j, v["t"], v["sigma"], v["x"][k], v["eps_uncond"][k], v["eps_cond"][k], v["eps"][k], v["denoised"][k],
                     v["attention"][k] if v["attention"] is not None else None) for j, v in enumerate(self.views)]


def _tokens(pipe, prompt: str) -> list[str]:
    tok = getattr(pipe, "tokenizer", None)
    if tok is None:
        return []
    ids = tok(prompt, add_special_tokens=True, truncation=True, max_length=tok.model_max_length).input_ids
    return [tok.convert_ids_to_tokens(i).replace("</w>", "") for i in ids]


@contextlib.contextmanager
def _recorder(pipe, attention: bool, samples: int, latent_hw: tuple[int, int]):
    if not attention:
        yield StepRecorder()
        return
    model = getattr(pipe, "unet", None) or pipe.transformer
    patch = int(model.config.patch_size) if getattr(pipe, "unet", None) is None else 1
    maps = _AttentionRecorder(samples, latent_hw)
    with _recording_attention(model, maps, patch):
        yield StepRecorder(maps)


def trace(pipe, spec: GenerationSpec, attention: bool = False, callback=None) -> Trace:
    """Generate one image with ``spec`` and record every step (see the module docstring).

    With ``attention=False`` the image is bit-identical to ``generate(pipe, spec)``.
    With attention maps, cross-attention is computed explicitly (same formula,
    plain matmul instead of the fused kernel), so pixels may differ by rounding.
    """
    if spec.mode != "txt2img":
        raise ValidationError(f"trace: only text-to-image specs can be traced, got {spec.mode}")
    resolved = prepare(pipe, spec.replace(batch_size=1))
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    with _recorder(pipe, attention, 1, (resolved.height // factor, resolved.width // factor)) as recorder:
        result = generate(pipe, resolved, callback=callback, hooks=[recorder])
    return Trace(spec=result.specs[0], steps=recorder.steps(0), result=result, tokens=_tokens(pipe, resolved.prompt),
                 preview_factors=model_info(pipe).preview)


def trace_many(pipe, specs: list[GenerationSpec], max_batch: int = 32) -> list[Trace]:
    """Trace text-to-image specs that share steps, sampler and size in batched calls (a sweep's cells),
    guidance varying per sample; each trace's image and steps are those of :func:`trace` for its spec."""
    resolved = [prepare(pipe, s.replace(batch_size=1)) for s in specs]
    if len({(s.steps, s.sampler, s.width, s.height, s.clip_skip) for s in resolved}) != 1:
        raise ValidationError("specs: trace_many batches specs of one steps/sampler/size/clip_skip; split them by those first")
    traces: list[Trace] = []
    for start in range(0, len(resolved), max_batch):
        chunk = resolved[start : start + max_batch]
        recorder = StepRecorder()
        made = generate_many(pipe, chunk, max_batch=max_batch, hooks=[recorder])
        if len(recorder.views) != chunk[0].steps:  # the batch was split into single calls: trace each
            traces += [trace(pipe, s) for s in chunk]
            continue
        for k, (image, spec) in enumerate(made):
            result = Result(images=[image], specs=[spec], model=model_info(pipe))
            traces.append(Trace(spec=spec, steps=recorder.steps(k), result=result, tokens=_tokens(pipe, spec.prompt),
                                preview_factors=model_info(pipe).preview))
    return traces


def prompt_tokens(tr: Trace) -> list[tuple[int, str]]:
    """(position, token) of the prompt's own tokens: no start, end or padding tokens."""
    return [(i, t) for i, t in enumerate(tr.tokens) if t not in ("<|startoftext|>", "<|endoftext|>")]


def attention_figure(tr: Trace, step: int | None = None):
    """Cross-attention heat maps per prompt token, at one step or averaged over all (matplotlib figure)."""
    import matplotlib.pyplot as plt

    maps = [s.attention for s in tr.steps if s.attention is not None]
    if not maps:
        raise ValidationError("attention: this trace has no attention maps; trace with attention=True")
    data = maps[step] if step is not None else torch.stack(maps).mean(dim=0)
    tokens = prompt_tokens(tr)
    fig, axes = plt.subplots(1, len(tokens) + 1, figsize=(1.6 * (len(tokens) + 1), 2.0), squeeze=False)
    axes = axes[0]
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
            if holds_sigma(sched):
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
