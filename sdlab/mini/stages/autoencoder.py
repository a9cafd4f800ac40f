"""The autoencoder stages: train the VAE, and later sharpen its decoder with the encoder frozen."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...images import to_tensor
from ...trainlog import append_log
from ...progress import Callback, Checkpointer, read_checkpoint
from .. import model as model_lib
from ..config import TrainConfig
from ...schedules import cosine
from .common import DECODER_STAGE, VAE_STAGE, save_checkpoint, step_generator
from .foreground import reconstruction_loss


def _autoencoder_stage(
    out: Path, name: str, vae, opt, steps: int, lr: float, stage: int, batch: int,
    images: np.ndarray, loss_fn: Callable, cfg: TrainConfig, progress: bool, callback: Callback | None = None,
) -> None:
    """The loop both autoencoder stages share: resume from ``{name}.ckpt``, cosine
    learning rate down to 10%, log every 50 steps, checkpoint every few minutes
    (and before ``callback`` stops the run by raising)."""
    ckpt_path, start = out / f"{name}.ckpt", 0
    if ckpt_path.exists():
        state = read_checkpoint(ckpt_path)
        vae.load_state_dict(state["model"]), opt.load_state_dict(state["opt"])
        start = state["step"]

    def save(step: int) -> None:
        save_checkpoint(ckpt_path, {"step": step, "model": vae.state_dict(), "opt": opt.state_dict()})

    checkpointer = Checkpointer(save, cfg.checkpoint_minutes)
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=name, disable=not progress)
    vae.train()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr * cosine(step, steps, 0.1)
        g = step_generator(cfg.seed, stage, step)
        idx = torch.randint(len(images), (batch,), generator=g).numpy()
        loss = loss_fn(to_tensor(images[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.5f}")
        if step % 50 == 0:
            append_log(out, {"stage": name, "step": step, "loss": loss.item(), "time": time.time()})
        checkpointer.step(step + 1, steps, callback)
    vae.eval()


def train_vae(out: Path, images: np.ndarray, cfg: TrainConfig, progress: bool = True, callback: Callback | None = None):
    """A KL autoencoder that reconstructs flat shapes; saved to ``out/vae``, and loaded from there when present.

    MSE on the posterior mean plus a tiny KL term: sampling the posterior while
    its variance is still large slows learning several-fold, and the diffusion
    model is trained on the means anyway. The shape-weighted loss of the decoder
    stage (``vae_foreground_weight``) is off by default: on the whole VAE it
    kept small shapes less well than plain MSE followed by
    :func:`finetune_decoder` does.
    """
    from diffusers import AutoencoderKL

    final = out / "vae"
    if (final / "config.json").exists():
        return AutoencoderKL.from_pretrained(final)
    torch.manual_seed(cfg.seed)
    vae = model_lib.build_vae(cfg.model)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.mode()).sample
        error = reconstruction_loss(recon, x, cfg.vae_foreground_weight) if cfg.vae_foreground_weight else F.mse_loss(recon, x)
        return error + cfg.vae_kl_weight * posterior.kl().mean()

    _autoencoder_stage(out, "vae", vae, opt, cfg.vae_steps, cfg.vae_lr, VAE_STAGE, cfg.vae_batch, images, loss_fn, cfg, progress, callback)
    vae.save_pretrained(final)
    return vae


def finetune_decoder(out: Path, vae, images: np.ndarray, cfg: TrainConfig, progress: bool = True,
                     callback: Callback | None = None):
    """Sharpen the decoder with the encoder frozen (as Stability's sd-vae-ft-mse did); saved to ``out/vae_decoder``.

    The latent space is the encoder's, so the UNet trained on cached latents is
    unaffected. The loss weighs shape pixels ``decoder_foreground_weight`` times
    more than background: a small shape is ~2% of the image, and plain MSE left
    small crosses looking like diamonds.
    """
    from diffusers import AutoencoderKL

    final = out / "vae_decoder"
    if (final / "config.json").exists():
        return AutoencoderKL.from_pretrained(final)
    torch.manual_seed(cfg.seed)
    decoder_params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    vae.requires_grad_(False)
    for p in decoder_params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(decoder_params, lr=cfg.decoder_lr, weight_decay=0.0)

    def loss_fn(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
        return reconstruction_loss(vae.decode(z).sample, x, cfg.decoder_foreground_weight)

    _autoencoder_stage(out, "decoder", vae, opt, cfg.decoder_steps, cfg.decoder_lr, DECODER_STAGE, cfg.decoder_batch, images,
                       loss_fn, cfg, progress, callback)
    vae.requires_grad_(False)
    vae.save_pretrained(final)
    return vae
