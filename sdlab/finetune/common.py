"""The training skeleton the four fine-tuning methods share.

1. images and captions in (:class:`Dataset`, checked: at least one image, one size, a size the
   VAE divides), latents out through the pipeline's own VAE (its distribution's mean, scaled
   as the pipeline scales them), encoded once;
2. per step, a generator seeded by (seed, step) draws the batch, the noise and the timesteps,
   so a run resumed from its checkpoint draws what the uninterrupted run drew and ends on the
   same weights;
3. the loss in the model's own prediction type (epsilon or v), min-SNR-gamma weighted
   (Hang et al. 2023) as diffusers' training scripts offer it;
4. one :class:`~sdlab.progress.Checkpointer` (timed, and before a raising callback: a panel's
   Cancel) and one :class:`~sdlab.progress.Reporter` (tqdm + callback) around the loop.

A method hands :func:`train_loop` its trainable tensors and a ``loss(step, generator)``;
everything about a user's pipeline is read, never written: methods train copies.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import Cancelled
from ..io import atomic_path
from ..models import rebuild_pipeline as rebuild  # the methods' results as new pipelines
from ..images import latent_cells
from ..progress import Callback, Checkpointer, Reporter, read_checkpoint
from ..schedules import LR_SCHEDULERS, lr_factor
from ..trainlog import append_log
from ..validation import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, SEED, Interval, Options, invalid, validate_fields

STATE_FILE = "train_state.pt"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MIXED_PRECISION = ("no", "fp16", "bf16")
TRAINABLE_FAMILIES = ("sd1", "sd2", "sdxl")

BASE_CONSTRAINTS = {
    "steps": [POSITIVE_INT], "lr": [POSITIVE], "batch": [POSITIVE_INT], "warmup_steps": [NON_NEGATIVE_INT],
    "seed": [SEED], "min_snr_gamma": [Interval(float, 0, None, closed="neither"), None],
    "checkpoint_minutes": [NON_NEGATIVE], "mixed_precision": [Options(MIXED_PRECISION)],
    "gradient_checkpointing": [bool], "mask_weight": [NON_NEGATIVE], "caption_dropout": [Interval(float, 0, 1, closed="left")],
    "lr_scheduler": [Options(LR_SCHEDULERS)],
}


@dataclass(frozen=True)
class TrainConfig:
    """What every method's run shares (each method's config adds its own fields)."""

    steps: int = 400  # optimiser steps
    lr: float = 1e-4  # AdamW learning rate after the warm-up
    batch: int = 8  # images per step (drawn with replacement, seeded per step)
    warmup_steps: int = 0  # linear warm-up from 0
    lr_scheduler: str = "constant"  # after the warm-up: "constant", or "cosine" toward 0 by the last step (diffusers' names)
    seed: int = 0  # decides every draw; with the data and model, the result
    min_snr_gamma: float | None = 5.0  # None: plain MSE
    checkpoint_minutes: float = 2.0  # a resumable checkpoint this often (and on Cancel)
    mixed_precision: str = "no"  # "fp16"/"bf16": autocast on CUDA (weights being trained stay fp32)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory on real SD
    mask_weight: float = 0.0  # latent cells at and next to the data's masks weigh 1 + this (kohya's masked loss, weighted)
    caption_dropout: float = 0.0  # share of drawn captions replaced by the empty prompt (kohya's caption_dropout_rate): the
    #                               unconditional prediction CFG subtracts learns too; helps on data like the base model's,
    #                               hurts on a concept's set (the empty prompt learns the concept; notebook 09, section 7)

    _parameter_constraints = BASE_CONSTRAINTS

    def __post_init__(self) -> None:
        validate_fields(self)


PRIOR_CONSTRAINTS = {**BASE_CONSTRAINTS, "prior_weight": [NON_NEGATIVE], "class_batch": [NON_NEGATIVE_INT],
                     "preserve_weight": [NON_NEGATIVE], "preserve_batch": [NON_NEGATIVE_INT]}


@dataclass(frozen=True)
class PriorConfig(TrainConfig):
    """What the weight-changing methods (DreamBooth, LoRA) add to keep the base model: two ways, each with its own data."""

    prior_weight: float = 0.0  # prior preservation: weight of the class images' loss (kohya's regularisation images; 0: off)
    class_batch: int = 4  # class images per step when prior_weight > 0
    preserve_weight: float = 0.0  # output preservation: weight of the loss pulling the model's predictions on the preservation
    #                               items toward the base model's own (ai-toolkit's DOP and BPP, kohya's differential output
    #                               preservation); 0 at the first step, where the model still is the base model
    preserve_batch: int = 4  # preservation items per step when preserve_weight > 0

    _parameter_constraints = PRIOR_CONSTRAINTS


@dataclass
class Dataset:
    """Fine-tuning images (uint8, N x H x W x 3) and one caption each."""

    images: np.ndarray
    captions: list[str]
    masks: np.ndarray | None = None  # N x H x W in [0, 1]: where the subject is (for cfg.mask_weight)

    def __post_init__(self) -> None:
        self.images = check_images(self.images)
        if len(self.captions) != len(self.images) or not all(isinstance(c, str) for c in self.captions):
            raise invalid("captions", f"{len(self.captions)} captions", f"one text caption per image ({len(self.images)})")
        if self.masks is not None and np.shape(self.masks) != self.images.shape[:3]:
            raise invalid("masks", f"shape {np.shape(self.masks)}", f"one H x W mask per image {self.images.shape[:3]}")

    def cell_weights(self, latent_hw: tuple[int, int], weight: float) -> torch.Tensor | None:
        """(N, 1, h, w) loss weights: 1 + ``weight`` at latent cells touching the mask (one cell of margin)."""
        if weight == 0:
            return None
        if self.masks is None:
            raise invalid("masks", None, "a mask per image when mask_weight is not 0")
        return 1.0 + weight * latent_cells(self.masks, latent_hw)


def check_images(images) -> np.ndarray:
    """One uint8 array from a list of RGB images, or a one-line refusal (none, mixed sizes, not RGB)."""
    if images is None or len(images) == 0:
        raise invalid("images", "no images", "one or more RGB images")
    arrays = [np.asarray(im) for im in images]
    sizes = sorted({a.shape for a in arrays})
    if len(sizes) > 1:
        shown = ", ".join(f"{s[1]}x{s[0]}" for s in sizes[:4])
        raise invalid("images", f"mixed sizes {shown}", "images of one size (resize or crop them first)")
    if len(sizes[0]) != 3 or sizes[0][2] != 3:
        raise invalid("images", f"arrays of shape {sizes[0]}", "RGB images (H x W x 3)")
    return np.stack(arrays).astype(np.uint8)


def read_folder(folder: str, template: str, token: str, name: str = "--images"):
    """Images (one size) and captions from ``folder``: each image's caption from ``NAME.txt`` beside it (kohya's and
    A1111's convention), else ``template`` with ``{token}`` replaced; refuses an empty folder or mixed sizes in one line
    (``name``: the option the folder came from, as the refusal names it)."""
    from ..images import open_image

    path = Path(folder)
    if not path.is_dir():
        raise invalid(name, folder, "an existing folder of images")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise invalid(name, folder, f"a folder holding one or more images ({', '.join(IMAGE_SUFFIXES)})")
    images = check_images([np.asarray(open_image(f, name).convert("RGB")) for f in files])
    captions = []
    for f in files:
        sidecar = f.with_suffix(".txt")
        captions.append(sidecar.read_text(encoding="utf-8").strip() if sidecar.exists() else template.replace("{token}", token))
    return images, captions


def check_family(pipe, method: str) -> str:
    """The pipeline's family if ``method`` can train it, else a one-line refusal naming what is supported."""
    from ..models import family

    name = family(pipe)
    if name not in TRAINABLE_FAMILIES:
        raise invalid("model", name, f"a model of family {', '.join(TRAINABLE_FAMILIES)} ({method} trains a UNet's attention)")
    return name


def check_size(pipe, images: np.ndarray) -> None:
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    h, w = images.shape[1:3]
    if h % factor or w % factor:
        raise invalid("images", f"{w}x{h}", f"a size divisible by {factor} (the VAE's downsampling)")


@torch.no_grad()
def encode_latents(pipe, images: np.ndarray, batch: int = 16) -> torch.Tensor:
    """Latents of ``images`` as the pipeline's UNet sees them: the VAE posterior's mean, shifted and scaled."""
    from ..images import to_tensor

    vae = pipe.vae
    param = next(vae.parameters())
    out = []
    for i in range(0, len(images), batch):
        x = to_tensor(images[i:i + batch]).to(param.device, param.dtype)
        out.append(vae.encode(x).latent_dist.mean.float())
    z = torch.cat(out)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (z - shift) * vae.config.scaling_factor


def token_ids(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids


def encode_text(encoders: list, tokenizers: list, captions: list[str], sdxl: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Text states for the UNet as diffusers' training scripts make them: SD 1.x/2.x the last hidden
    state; SDXL both encoders' penultimate states concatenated and the second's pooled output."""
    states, pooled = [], None
    for encoder, tok in zip(encoders, tokenizers):
        ids = token_ids(tok, captions).to(encoder.device)
        if sdxl:
            out = encoder(ids, output_hidden_states=True)
            states.append(out.hidden_states[-2])
            pooled = out[0]
        else:
            states.append(encoder(ids)[0])
    return torch.cat(states, dim=-1), pooled


def sdxl_time_ids(height: int, width: int, n: int, device) -> torch.Tensor:
    """SDXL's micro-conditioning for uncropped images at their own size: (h, w, 0, 0, h, w)."""
    return torch.tensor([[height, width, 0, 0, height, width]] * n, dtype=torch.float32, device=device)


def noise_scheduler(pipe):
    """A DDPM scheduler with the pipeline's training schedule and prediction type."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The draws of one step: the same (seed, step) gives the same batch, noise and timesteps."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def snr_weights(scheduler, gamma: float | None) -> torch.Tensor:
    """Per-timestep loss weights: min-SNR-gamma for the model's prediction type (1 when gamma is None).

    For v-prediction the loss on v weighs x0's error by SNR + 1; capping that at gamma + 1 keeps
    weight 1 at SNR 0, where a zero-terminal-SNR schedule (the shapes world's) puts the layout.
    """
    ac = scheduler.alphas_cumprod.double()
    snr = ac / (1 - ac)
    if gamma is None:
        return torch.ones_like(snr).float()
    if scheduler.config.prediction_type == "v_prediction":
        return ((snr.clamp(max=gamma) + 1) / (snr + 1)).float()
    return (snr.clamp(max=gamma) / snr).float()


def diffusion_loss(unet, scheduler, weights: torch.Tensor, z0: torch.Tensor, states: torch.Tensor, g: torch.Generator,
                   added: dict | None = None, reduce: bool = True, cells: torch.Tensor | None = None,
                   teacher=None, teacher_inputs: tuple | None = None) -> torch.Tensor:
    """Noise ``z0`` at timesteps drawn from ``g`` and return the weighted MSE of the UNet's prediction
    (``cells``: per-latent-cell weights, normalised to mean 1 per image). With a ``teacher`` UNet the target
    is the teacher's own prediction for the same noisy latents (given ``teacher_inputs`` = (states, added), else
    ``states`` and ``added``), not the noise: output preservation, the loss that is 0 while the model still
    predicts what the teacher does."""
    noise = torch.randn(z0.shape, generator=g).to(z0.device, z0.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(z0),), generator=g)
    noisy = scheduler.add_noise(z0, noise, t)
    kind = scheduler.config.prediction_type
    if teacher is not None:
        t_states, t_added = teacher_inputs or (states, added)
        with torch.no_grad():
            target = teacher(noisy, t.to(z0.device), t_states, added_cond_kwargs=t_added).sample
    elif kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = scheduler.get_velocity(z0, noise, t)
    else:
        raise invalid("prediction_type", kind, "epsilon or v_prediction")
    pred = unet(noisy, t.to(z0.device), states, added_cond_kwargs=added).sample
    error = (pred.float() - target.float()).pow(2)
    if cells is not None:
        cells = cells.to(error.device)
        error = error * cells / cells.mean(dim=(1, 2, 3), keepdim=True)
    per_sample = error.mean(dim=(1, 2, 3)) * weights[t].to(z0.device)
    return per_sample.mean() if reduce else per_sample


def check_precision(mixed_precision: str, device) -> None:
    """fp16/bf16 are CUDA's autocast here; asked for on another device they would train in fp32 without a word."""
    kind = torch.device(device).type
    if mixed_precision != "no" and kind != "cuda":
        raise invalid("mixed_precision", mixed_precision, f"no on {kind} (fp16 and bf16 train with CUDA's autocast)")


def autocast(cfg: TrainConfig, device) -> torch.autocast:
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision)
    enabled = dtype is not None and torch.device(device).type == "cuda"
    return torch.autocast(torch.device(device).type, dtype=dtype or torch.bfloat16, enabled=enabled)


def train_loop(
    out: str | Path, cfg: TrainConfig, params: list[torch.Tensor], loss: Callable[[int, torch.Generator], torch.Tensor],
    state: Callable[[], dict], load_state: Callable[[dict], None], after_step: Callable[[], None] | None = None,
    callback: Callback | None = None, progress: bool = False, desc: str = "train",
) -> dict:
    """Run ``cfg.steps`` AdamW steps on ``params``, resuming from ``out/train_state.pt`` when it is there.

    ``state()``/``load_state(d)`` give and take the trainable tensors; ``after_step`` runs after each
    optimiser step (textual inversion puts the frozen embedding rows back there). Returns
    ``{"steps", "seconds", "loss", "caption_dropout"}`` (seconds summed over resumed runs; loss: the last 20 steps' mean).
    """
    check_precision(cfg.mixed_precision, params[0].device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    scaler = torch.amp.GradScaler(enabled=cfg.mixed_precision == "fp16" and params[0].is_cuda)
    path, start, seconds, recent = out / STATE_FILE, 0, 0.0, []
    if path.exists():
        saved = read_checkpoint(path, map_location=params[0].device)
        load_state(saved["trainable"])
        opt.load_state_dict(saved["opt"])
        start, seconds, recent = saved["step"], saved["seconds"], list(saved["recent"])
    began = time.perf_counter()

    def save(step: int) -> None:
        with atomic_path(path) as tmp:
            torch.save({"step": step, "trainable": state(), "opt": opt.state_dict(), "recent": recent,
                        "seconds": seconds + time.perf_counter() - began}, tmp)

    checkpointer = Checkpointer(save, cfg.checkpoint_minutes)
    with Reporter(callback, progress, desc) as reporter:
        reporter(start, cfg.steps)
        for step in range(start, cfg.steps):
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, step)
            value = loss(step, step_generator(cfg.seed, step))
            opt.zero_grad(set_to_none=True)
            scaler.scale(value).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            scaler.step(opt)
            scaler.update()
            if after_step is not None:
                after_step()
            recent = (recent + [float(value.detach())])[-20:]
            if step % 25 == 0 or step + 1 == cfg.steps:
                append_log(out, {"stage": desc, "step": step, "loss": float(value.detach()), "time": time.time()})
            checkpointer.step(step + 1, cfg.steps, reporter)
    save(cfg.steps)
    return {"steps": cfg.steps, "seconds": seconds + time.perf_counter() - began, "loss": float(np.mean(recent)) if recent else None,
            "caption_dropout": cfg.caption_dropout}


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The lr of 0-based ``step``: a linear warm-up, then constant or a cosine to 0 (diffusers' schedules)."""
    return cfg.lr * lr_factor(step, cfg.steps, cfg.warmup_steps, cfg.lr_scheduler)


def draw(n: int, batch: int, g: torch.Generator) -> torch.Tensor:
    """``batch`` indices into ``n`` items, drawn with replacement from ``g``."""
    return torch.randint(n, (batch,), generator=g)


class EncodedSet:
    """A fine-tuning set passed once through the frozen VAE and text encoders (latents, per-cell loss weights,
    text states, SDXL's pooled embeddings); :meth:`loss` is its diffusion loss on one seeded draw, the step
    loss every UNet-side method takes on its subject (and DreamBooth's and a LoRA's on their class images)."""

    def __init__(self, pipe, data: Dataset, encoders: list, tokenizers: list, mask_weight: float, device, sdxl: bool) -> None:
        with torch.no_grad():
            self.latents = encode_latents(pipe, data.images).to(device)
            self.states, self.pooled = encode_text(encoders, tokenizers, data.captions, sdxl)
            self.empty = encode_text(encoders, tokenizers, [""], sdxl)  # the unconditional prompt, for caption dropout
        self.cells = data.cell_weights(tuple(self.latents.shape[-2:]), mask_weight)
        self.captions, self.sdxl, self.size = list(data.captions), sdxl, tuple(data.images.shape[1:3])

    def __len__(self) -> int:
        return len(self.latents)

    def loss(self, unet, scheduler, weights: torch.Tensor, batch: int, g: torch.Generator, encode=None,
             caption_dropout: float = 0.0, teacher=None) -> torch.Tensor:
        """The loss on ``batch`` items drawn with ``g``; ``encode(captions) -> (states, pooled)`` re-encodes their
        captions (a text encoder being trained), else the states encoded once are used. ``caption_dropout``: the
        share of the drawn items trained on the empty prompt instead (drawn from ``g`` only when it is not 0)."""
        idx = draw(len(self.latents), batch, g)
        drop = torch.rand(len(idx), generator=g) < caption_dropout if caption_dropout else torch.zeros(len(idx), dtype=torch.bool)
        if encode is not None:
            states, pooled = encode(["" if d else self.captions[i] for i, d in zip(idx.tolist(), drop.tolist())])
        else:
            states, pooled = self.states[idx], self.pooled[idx] if self.pooled is not None else None
            if drop.any():
                where = drop.to(states.device)
                states = torch.where(where[:, None, None], self.empty[0].to(states.dtype), states)
                if pooled is not None:
                    pooled = torch.where(where[:, None], self.empty[1].to(pooled.dtype), pooled)
        added = self._added(pooled, len(idx))
        # a teacher reads the states the frozen encoders gave once, not those of the encoders being trained
        base = (self.states[idx], self._added(self.pooled[idx] if self.pooled is not None else None, len(idx))) if encode else None
        return diffusion_loss(unet, scheduler, weights, self.latents[idx], states, g, added, cells=None if self.cells is None else self.cells[idx],
                              teacher=teacher, teacher_inputs=base if teacher is not None else None)

    def _added(self, pooled, n: int) -> dict | None:
        """SDXL's added conditioning for ``n`` items (their pooled text, the set's size as micro-conditioning)."""
        return {"text_embeds": pooled, "time_ids": sdxl_time_ids(*self.size, n, self.latents.device)} if self.sdxl else None


class PriorSet(EncodedSet):
    """Prior preservation's class images (DreamBooth's, kohya's regularisation images for a LoRA): the term that
    keeps what the base model drew for the class while the subject is learned. Without masks, a plain loss."""

    def __init__(self, pipe, data: Dataset, encoders: list, tokenizers: list, mask_weight: float, device, sdxl: bool) -> None:
        check_size(pipe, data.images)
        super().__init__(pipe, data, encoders, tokenizers, mask_weight if data.masks is not None else 0.0, device, sdxl)


def subject_and_prior_loss(cfg: TrainConfig, unet, scheduler, weights: torch.Tensor, subject: EncodedSet, prior: PriorSet | None,
                           encode=None, last: dict | None = None, preserve: PriorSet | None = None, teacher=None):
    """The ``loss(step, g)`` of DreamBooth and a LoRA: the subject's loss on ``cfg.batch`` images, plus
    ``cfg.prior_weight`` times the class images' on ``cfg.class_batch`` (drawn after, from the same generator),
    plus ``cfg.preserve_weight`` times output preservation on ``preserve`` (``cfg.preserve_batch`` items, the
    ``teacher``'s predictions as targets); ``last`` keeps the latest prior and preservation terms."""

    def loss(step: int, g: torch.Generator) -> torch.Tensor:
        with autocast(cfg, unet.device):
            total = subject.loss(unet, scheduler, weights, cfg.batch, g, encode, cfg.caption_dropout)
            if prior is not None:
                term = prior.loss(unet, scheduler, weights, cfg.class_batch, g, encode, cfg.caption_dropout)
                total = total + cfg.prior_weight * term
                if last is not None:
                    last["prior"] = float(term.detach())
            if preserve is not None:
                kept = preserve.loss(unet, scheduler, weights, cfg.preserve_batch, g, encode, teacher=teacher)
                total = total + cfg.preserve_weight * kept
                if last is not None:
                    last["preserve"] = float(kept.detach())
        return total

    return loss


__all__ = ["Cancelled", "Dataset", "EncodedSet", "PriorSet", "TrainConfig", "train_loop", "encode_latents", "encode_text", "diffusion_loss"]
