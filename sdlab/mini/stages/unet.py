"""The UNet's stage: v-prediction against the frozen text encoder, min-SNR weighting, CFG dropout, EMA weights.

The objective is SD 2.x's: predict the velocity ``v = sqrt(abar) eps -
sqrt(1 - abar) z0`` at a uniformly drawn timestep of a schedule rescaled to
(almost) zero terminal SNR (see ``model.build_noise_scheduler`` for why), with
the high-SNR steps down-weighted as min-SNR-gamma does (Hang et al. 2023), and
the caption dropped (empty prompt) a share of the time so classifier-free
guidance works at inference.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...trainlog import append_log
from ...progress import Callback, Checkpointer, read_checkpoint
from ...validation import invalid
from .. import model as model_lib
from ..config import TrainConfig
from ...schedules import cosine, warmup
from .common import UNET_STAGE, save_checkpoint, step_generator
from .foreground import latent_foreground
from .text import token_ids


def pyramid_noise(shape: tuple[int, ...], generator: torch.Generator, discount: float = 0.8) -> torch.Tensor:
    """Gaussian noise plus upsampled coarser noise at every halving of the resolution (weight ``discount**i``).

    On small latents SD's schedule leaves the low frequencies (background
    colour, layout) readable at the last timestep: the mean of a 16x16 latent
    keeps an SNR near 1 at t=T. The model then reads them from x_T, which at
    inference is pure noise, so background and position ignore the prompt.
    Noise with low-frequency energy hides them, so they must come from the text.
    """
    b, c, h, w = shape
    noise = torch.randn(shape, generator=generator)
    level = 1
    while min(h, w) >> (level - 1) > 1:
        low = torch.randn((b, c, max(h >> level, 1), max(w >> level, 1)), generator=generator)
        noise = noise + F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False) * discount**level
        level += 1
    return noise / noise.std(dim=(1, 2, 3), keepdim=True)


def _ema_update(ema: torch.nn.Module, live: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        ema_p, live_p = list(ema.parameters()), list(live.parameters())
        torch._foreach_mul_(ema_p, decay)
        torch._foreach_add_(ema_p, live_p, alpha=1.0 - decay)


@torch.no_grad()
def _encode_captions(text, ids: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen text encoder's states for each distinct caption, and each row's index into them.

    The UNet stage keeps the text encoder frozen, so encoding every distinct
    caption once replaces a text forward pass per step.
    """
    distinct, row = torch.unique(ids, dim=0, return_inverse=True)
    states = torch.cat([text(distinct[i:i + batch]).last_hidden_state for i in range(0, len(distinct), batch)])
    return states, row


def train_unet(
    out: Path, latents: np.ndarray, captions: list[str], tok, text, cfg: TrainConfig, progress: bool = True,
    images: np.ndarray | None = None, init=None, stage: int = UNET_STAGE, callback: Callback | None = None,
):
    """The UNet against the frozen text encoder; returns the EMA UNet and the (frozen) text encoder.

    ``images`` (the training images) are needed when ``cfg.unet_foreground_weight`` is set;
    ``init`` is a UNet to start from (fine-tuning) instead of fresh weights.
    ``callback(step, total)`` runs after each step (a panel's progress bar); when it
    raises (``Cancelled``), the step's state is checkpointed first, so a rerun resumes there.
    """
    if cfg.unet_foreground_weight and images is None:
        raise invalid("images", images, "the training images (an array) when unet_foreground_weight is not 0")
    torch.manual_seed(cfg.seed)
    unet = model_lib.build_unet(cfg.model) if init is None else copy.deepcopy(init).requires_grad_(True)
    text = text.requires_grad_(False).eval()
    ema_unet = copy.deepcopy(unet).requires_grad_(False)
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.01)
    ckpt_path, start = out / "unet.ckpt", 0
    if ckpt_path.exists():
        state = read_checkpoint(ckpt_path)
        unet.load_state_dict(state["unet"]), ema_unet.load_state_dict(state["ema_unet"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    sched = model_lib.build_noise_scheduler()
    alphas_cumprod = sched.alphas_cumprod
    snr = alphas_cumprod / (1 - alphas_cumprod)
    # Loss on v weighs x0's error by SNR + 1; cap that at gamma + 1 (min-SNR-gamma), keeping weight 1 at SNR 0.
    weights = (torch.clamp(snr, max=cfg.min_snr_gamma) + 1) / (snr + 1)

    states, row = _encode_captions(text, token_ids(tok, captions))
    empty_state = _encode_captions(text, token_ids(tok, [""]))[0]
    z_all = torch.from_numpy(latents)
    if cfg.unet_foreground_weight:
        masks = latent_foreground(images, latents.shape[-1])
    unet.train()

    def save(step: int) -> None:
        save_checkpoint(ckpt_path, {
            "step": step, "unet": unet.state_dict(), "ema_unet": ema_unet.state_dict(), "opt": opt.state_dict(),
        })

    checkpointer = Checkpointer(save, cfg.checkpoint_minutes)
    bar = tqdm(range(start, cfg.unet_steps), initial=start, total=cfg.unet_steps, desc="unet", disable=not progress)
    for step in bar:
        lr = cfg.unet_lr * warmup(step, cfg.warmup_steps) * cosine(step, cfg.unet_steps, cfg.unet_final_lr_fraction)
        for group in opt.param_groups:
            group["lr"] = lr
        g = step_generator(cfg.seed, stage, step)
        idx = torch.randint(len(z_all), (cfg.unet_batch,), generator=g)
        z0 = z_all[idx]
        context = states[row[idx]]
        drop = torch.rand(cfg.unet_batch, generator=g) < cfg.cfg_dropout
        context[drop] = empty_state
        t = torch.randint(0, sched.config.num_train_timesteps, (cfg.unet_batch,), generator=g)
        eps = pyramid_noise(tuple(z0.shape), g, cfg.pyramid_discount) if cfg.noise == "pyramid" else torch.randn(z0.shape, generator=g)
        z_t = sched.add_noise(z0, eps, t)
        pred = unet(z_t, t, context).sample
        target = sched.get_velocity(z0, eps, t) if sched.config.prediction_type == "v_prediction" else eps
        error = (pred - target).pow(2)
        if cfg.unet_foreground_weight:
            cell = 1.0 + cfg.unet_foreground_weight * masks[idx].float()
            error = error * cell / cell.mean()
        loss = (weights[t] * error.mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        _ema_update(ema_unet, unet, decay)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % 50 == 0:
            append_log(out, {"stage": "unet", "step": step, "loss": loss.item(), "time": time.time()})
        checkpointer.step(step + 1, cfg.unet_steps, callback)
    save(cfg.unet_steps)
    return ema_unet.eval(), text
