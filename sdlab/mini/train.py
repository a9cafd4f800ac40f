"""Train the shapes world from scratch: data -> VAE -> cached latents -> text encoder -> UNet -> decoder.

Each stage leaves its result in the output directory and is skipped when that
result is already there, and the two long stages checkpoint every few
minutes, so ``sdlab mini train --out DIR`` killed at any point resumes where it
stopped. Batches, noise and timesteps are drawn from a generator seeded by
(seed, step), so a resumed run is the same run.

The UNet objective is SD 2.x's: predict the velocity ``v = sqrt(abar) eps -
sqrt(1 - abar) z0`` at a uniformly drawn timestep of a schedule rescaled to
(almost) zero terminal SNR (see ``model.build_noise_scheduler`` for why), with
the high-SNR steps down-weighted as min-SNR-gamma does (Hang et al. 2023), and
the caption dropped (empty prompt) a share of the time so classifier-free
guidance works at inference.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import ValidationError
from ..images import to_tensor
from ..io import append_jsonl, atomic_path, atomic_write_text
from ..progress import report
from . import model as model_lib
from . import tokenizer as tokenizer_lib
from . import world

PIPELINE_DIR = "pipeline"
TEXT_READS = ("end", "words")
NOISES = ("gaussian", "pyramid")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (with the seed, a run is reproducible).

    The defaults are the shipped model (v5): ``sdlab mini train --out DIR`` with seed 0
    made it in 81 min on the project's 2-core machine (UNet 63.7 min at 2.9 it/s).
    """

    seed: int = 0
    n_images: int = 40_000
    vae_steps: int = 2_400
    vae_batch: int = 16
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    vae_foreground_weight: float = 0.0  # 0: plain MSE; see train_vae for why not 30
    decoder_steps: int = 2_000
    decoder_batch: int = 16
    decoder_lr: float = 5e-4
    decoder_foreground_weight: float = 30.0  # v4's decoder: 1,000 steps at 10, then 1,500 at 30
    unet_steps: int = 11_000
    unet_batch: int = 64
    unet_lr: float = 5e-4
    unet_final_lr_fraction: float = 0.1  # cosine decay to this share of unet_lr
    warmup_steps: int = 200
    cfg_dropout: float = 0.1
    text_steps: int = 400  # attribute pretraining of the text encoder (then frozen); loss 0.03 by step 150
    text_batch: int = 128
    text_lr: float = 1e-3
    text_reads: str = "words"  # where the attribute heads read: "words" (v3, v4, v5) or "end" (v2); see pretrain_text_encoder
    text_end_weight: float = 1.0  # with text_reads="words": pull end-of-text states onto the empty prompt's
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0
    unet_foreground_weight: float = 12.0  # latent cells at and next to the shape weigh 1 + this (0: plain MSE); see latent_foreground
    noise: str = "gaussian"  # or "pyramid"; see pyramid_noise()
    pyramid_discount: float = 0.8
    checkpoint_minutes: float = 3.0
    model: model_lib.ModelConfig = field(default_factory=model_lib.ModelConfig)

    def __post_init__(self) -> None:
        for name in ("n_images", "vae_steps", "vae_batch", "decoder_steps", "decoder_batch", "unet_steps", "unet_batch",
                     "warmup_steps", "text_steps", "text_batch"):
            if getattr(self, name) < 1:
                raise ValidationError(f"{name}: must be at least 1, got {getattr(self, name)}")
        for name in ("vae_lr", "decoder_lr", "unet_lr", "text_lr"):
            if not getattr(self, name) > 0:
                raise ValidationError(f"{name}: must be > 0, got {getattr(self, name)}")
        for name in ("vae_foreground_weight", "decoder_foreground_weight", "unet_foreground_weight"):
            if not getattr(self, name) >= 0:
                raise ValidationError(f"{name}: must be >= 0 (0: plain loss), got {getattr(self, name)}")
        if not 0 <= self.cfg_dropout < 1:
            raise ValidationError(f"cfg_dropout: must be in [0, 1), got {self.cfg_dropout}")
        if self.text_reads not in TEXT_READS:
            raise ValidationError(f"text_reads: must be one of {', '.join(TEXT_READS)}, got {self.text_reads!r}")
        if self.noise not in NOISES:
            raise ValidationError(f"noise: must be {' or '.join(NOISES)}, got {self.noise!r}")


def config_from_dict(saved: dict) -> TrainConfig:
    """The ``TrainConfig`` a run wrote (``train_config.json``, or ``sdlab.json``'s "training"); keys it does not know are ignored."""
    saved = dict(saved)
    model = model_lib.ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.pop("model").items()})
    known = set(TrainConfig.__dataclass_fields__)
    return TrainConfig(**{k: v for k, v in saved.items() if k in known}, model=model)


def _step_generator(seed: int, stage: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + stage * 100_003 + step)


def _cosine(step: int, steps: int, final: float) -> float:
    """Cosine decay from 1 at step 0 to ``final`` at ``steps``."""
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


def _save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _log(out: Path, record: dict) -> None:
    append_jsonl(out / "train_log.jsonl", record)


def prepare_data(out: Path, cfg: TrainConfig) -> tuple[np.ndarray, "object"]:
    """Generate (or reuse) the training images and their metadata parquet."""
    import pandas as pd

    data = out / "data"
    images_path, meta_path = data / "images.npy", data / "metadata.parquet"
    if images_path.exists() and meta_path.exists():
        return np.load(images_path), pd.read_parquet(meta_path)
    images, meta = world.make_dataset(cfg.n_images, seed=cfg.seed)
    data.mkdir(parents=True, exist_ok=True)
    with atomic_path(images_path) as tmp:
        np.save(tmp, images)
    with atomic_path(meta_path) as tmp:
        meta.to_parquet(tmp, index=False)
    return images, meta


def _autoencoder_stage(
    out: Path, name: str, vae, opt, steps: int, lr: float, stage: int, batch: int,
    images: np.ndarray, loss_fn: Callable, cfg: TrainConfig, progress: bool, callback: Callable[[int, int], None] | None = None,
) -> None:
    """The loop both autoencoder stages share: resume from ``{name}.ckpt``, cosine
    learning rate down to 10%, log every 50 steps, checkpoint every few minutes
    (and before ``callback`` stops the run by raising; see ``train_unet``)."""
    ckpt_path, start = out / f"{name}.ckpt", 0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=True)
        vae.load_state_dict(state["model"]), opt.load_state_dict(state["opt"])
        start = state["step"]
    last_save = time.monotonic()

    def save(step: int) -> None:
        _save_checkpoint(ckpt_path, {"step": step, "model": vae.state_dict(), "opt": opt.state_dict()})

    bar = tqdm(range(start, steps), initial=start, total=steps, desc=name, disable=not progress)
    vae.train()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr * _cosine(step, steps, 0.1)
        g = _step_generator(cfg.seed, stage, step)
        idx = torch.randint(len(images), (batch,), generator=g).numpy()
        loss = loss_fn(to_tensor(images[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.5f}")
        if step % 50 == 0:
            _log(out, {"stage": name, "step": step, "loss": loss.item(), "time": time.time()})
        if time.monotonic() - last_save > cfg.checkpoint_minutes * 60:
            save(step + 1)
            last_save = time.monotonic()
        report(callback, step + 1, steps, save)
    vae.eval()


def train_vae(out: Path, images: np.ndarray, cfg: TrainConfig, progress: bool = True, callback: Callable[[int, int], None] | None = None):
    """Stage 2: a KL autoencoder that reconstructs flat shapes.

    MSE on the posterior mean plus a tiny KL term: sampling the posterior while
    its variance is still large slowed learning several-fold here, and the
    diffusion model is trained on the means anyway. The foreground-weighted
    loss of the decoder stage (``vae_foreground_weight=30``) was tried for the
    whole VAE, to keep small shapes in the encoder: after the same 2,400 steps
    round trips of 400 ground-truth images checked 0.76 on shape (small shapes
    108/204), against 0.89 (160/204) for the MSE VAE with its decoder
    fine-tuned; 300 decoder steps on top lifted it only to 0.78.
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
        error = _reconstruction_loss(recon, x, cfg.vae_foreground_weight) if cfg.vae_foreground_weight else F.mse_loss(recon, x)
        return error + cfg.vae_kl_weight * posterior.kl().mean()

    _autoencoder_stage(out, "vae", vae, opt, cfg.vae_steps, cfg.vae_lr, 1, cfg.vae_batch, images, loss_fn, cfg, progress, callback)
    vae.save_pretrained(final)
    return vae


def _foreground(x: torch.Tensor, threshold: float = 0.15) -> torch.Tensor:
    """1 where a pixel differs from its image's border colour (the shape), else 0."""
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)
    background = border.median(dim=2).values[:, :, None, None]
    return ((x - background).abs().amax(dim=1, keepdim=True) > threshold).float()


def latent_foreground(images: np.ndarray, latent_size: int, dilation: int = 1, batch: int = 1024) -> torch.Tensor:
    """(n, 1, h, w) 1 at latent cells that hold part of the shape or lie ``dilation`` cells from it.

    A small shape covers 3-4 latent cells of 256: under plain MSE the UNet's
    error on it is a rounding error of the background's, and small squares and
    crosses came out as blobs the checker reads as circles.
    """
    factor = images.shape[1] // latent_size
    chunks = []
    for i in range(0, len(images), batch):
        cells = F.max_pool2d(_foreground(to_tensor(images[i : i + batch])), factor)
        chunks.append(F.max_pool2d(cells, 2 * dilation + 1, stride=1, padding=dilation).to(torch.uint8))
    return torch.cat(chunks)


def _reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, foreground_weight: float) -> torch.Tensor:
    """L2 + L1 error with shape pixels weighted ``1 + foreground_weight``: a small shape is ~2% of the image."""
    error = recon - x
    weight = 1.0 + foreground_weight * _foreground(x)
    return (weight * (error.pow(2) + error.abs())).mean() / weight.mean()


def finetune_decoder(out: Path, vae, images: np.ndarray, cfg: TrainConfig, progress: bool = True,
                     callback: Callable[[int, int], None] | None = None):
    """Stage 6: sharpen the decoder with the encoder frozen (as Stability's sd-vae-ft-mse did).

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
        return _reconstruction_loss(vae.decode(z).sample, x, cfg.decoder_foreground_weight)

    _autoencoder_stage(out, "decoder", vae, opt, cfg.decoder_steps, cfg.decoder_lr, 3, cfg.decoder_batch, images, loss_fn, cfg, progress, callback)
    vae.requires_grad_(False)
    vae.save_pretrained(final)
    return vae


@torch.no_grad()
def encode_latents(out: Path, vae, images: np.ndarray, batch: int = 256, progress: bool = True) -> np.ndarray:
    """Stage 3: the VAE posterior means of every training image, cached so the UNet never runs the encoder."""
    path = out / "latents.npy"
    if path.exists():
        return np.load(path)
    chunks = []
    for i in tqdm(range(0, len(images), batch), desc="encode", disable=not progress):
        chunks.append(vae.encode(to_tensor(images[i : i + batch])).latent_dist.mean.numpy())
    latents = np.concatenate(chunks).astype(np.float32)
    with atomic_path(path) as tmp:
        np.save(tmp, latents)
    return latents


def fit_preview_factors(latents: np.ndarray, images: np.ndarray) -> dict:
    """Least-squares linear map from (scaled) latent channels to RGB in [-1, 1], as A1111's cheap previews."""
    n, c, h, w = latents.shape
    small = to_tensor(images).reshape(n, 3, h, images.shape[1] // h, w, images.shape[2] // w).mean(dim=(3, 5))
    x = np.concatenate([latents.transpose(0, 2, 3, 1).reshape(-1, c), np.ones((n * h * w, 1), np.float32)], axis=1)
    y = small.numpy().transpose(0, 2, 3, 1).reshape(-1, 3)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return {"latent_rgb_factors": coef[:c].round(5).tolist(), "latent_rgb_bias": coef[c].round(5).tolist()}


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


ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "shape": world.SHAPES, "colour": tuple(world.COLOURS), "size": world.SIZES,
    "position": tuple(world.POSITIONS), "background": tuple(world.BACKGROUNDS),
}


def caption_labels(captions: list[str]) -> torch.Tensor:
    """(n, 5) class index per attribute that each caption names; ``len(values)`` where it names none."""
    rows = []
    for text in captions:
        named = world.parse_caption(text)
        rows.append([values.index(named[a]) if a in named else len(values) for a, values in ATTRIBUTE_VALUES.items()])
    return torch.tensor(rows, dtype=torch.long)


def _token_ids(tok, captions: list[str]) -> torch.Tensor:
    return torch.tensor(tok(captions, padding="max_length", max_length=tokenizer_lib.MAX_LENGTH, truncation=True).input_ids)


@torch.no_grad()
def _encode_captions(text, ids: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen text encoder's states for each distinct caption, and each row's index into them.

    The UNet stage keeps the text encoder frozen, so encoding every distinct
    caption once replaces a text forward pass per step (about an eighth of a step here).
    """
    distinct, row = torch.unique(ids, dim=0, return_inverse=True)
    states = torch.cat([text(distinct[i:i + batch]).last_hidden_state for i in range(0, len(distinct), batch)])
    return states, row


def _first_eos(ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """(b,) position of each caption's first end-of-text token."""
    return (ids == eos_token_id).int().argmax(dim=1)


def _word_positions(ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """(b, 77) True at the caption's own tokens: after start-of-text, before the first end-of-text."""
    position = torch.arange(ids.shape[1])[None, :]
    return (position >= 1) & (position < _first_eos(ids, eos_token_id)[:, None])


def _text_losses(text, heads, ids: torch.Tensor, labels: torch.Tensor, empty_ids: torch.Tensor, eos_token_id: int, reads: str):
    """Attribute cross-entropy, the end-of-text states' distance from the empty prompt's, and one pooled state per caption.

    ``reads="end"``: every state from the first end-of-text on predicts the attributes (pooled: the first
    end-of-text state). ``reads="words"``: the mean of the caption's word states does.
    """
    hidden = text(ids).last_hidden_state  # (b, 77, width)
    empty = text(empty_ids).last_hidden_state  # (1, 77, width)
    words = _word_positions(ids, eos_token_id)
    end = ~words
    end[:, 0] = False  # start-of-text sees only itself: already the same for every caption
    end_distance = (hidden - empty).pow(2)[end].mean() / empty.detach()[0, 1:].pow(2).mean()
    if reads == "words":
        pooled = (hidden * words[..., None]).sum(1) / words.sum(1, keepdim=True).clamp(min=1)
        attribute = sum(F.cross_entropy(head(pooled), labels[:, i]) for i, head in enumerate(heads.values())) / len(heads)
    else:
        states, targets = hidden[end], labels[:, None, :].expand(-1, ids.shape[1], -1)[end]
        attribute = sum(F.cross_entropy(head(states), targets[:, i]) for i, head in enumerate(heads.values())) / len(heads)
        pooled = hidden[torch.arange(len(ids)), _first_eos(ids, eos_token_id)]
    return attribute, end_distance, pooled


def pretrain_text_encoder(out: Path, captions: list[str], tok, cfg: TrainConfig, progress: bool = True,
                          callback: Callable[[int, int], None] | None = None):
    """Stage 4: teach the text encoder to read every attribute a caption names; it is then frozen.

    SD trains its UNet against a frozen, pretrained CLIP text encoder. Trained
    jointly from scratch instead, ours collapsed onto what the young UNet used
    first: at 2,400 steps its hidden states for "at the top left" and "at the
    bottom right" differed by 3% (colour words by 61%), and position never
    became learnable. Here a linear head per attribute (value, or "not named")
    reads the encoder's states, where ``cfg.text_reads`` says:

    - ``"end"`` (the v2 model): every state from end-of-text on, the
      60-odd positions the UNet's cross-attention mostly attends to; empty
      captions (CFG's unconditional input) are mixed in, labelled "not named".
      The meaning then lives in the end-of-text states, and A1111 weighting,
      which scales a word's own state, barely acts.
    - ``"words"`` (v3, v4 and the shipped v5): the mean of the caption's word
      states, while a second loss pulls every end-of-text state onto the empty
      prompt's, so the UNet must attend to "red" to draw red and weighting
      acts. It needs a longer UNet run: at 6,000 steps all-five accuracy was
      0.67 against 0.77 for "end"; at 9,000 steps 0.75.

    Short (a few minutes), so a killed run redoes this stage rather than resuming it.
    """
    from transformers import CLIPTextModel

    final = out / "text_encoder"
    if (final / "config.json").exists():
        return CLIPTextModel.from_pretrained(final)
    torch.manual_seed(cfg.seed)
    text = model_lib.build_text_encoder(cfg.model, tok)
    heads = torch.nn.ModuleDict({a: torch.nn.Linear(cfg.model.text_width, len(v) + 1) for a, v in ATTRIBUTE_VALUES.items()})
    params = list(text.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.text_lr, weight_decay=0.01)
    ids, labels = _token_ids(tok, captions), caption_labels(captions)
    empty_ids, empty_labels = _token_ids(tok, [""]), caption_labels([""])
    bar = tqdm(range(cfg.text_steps), desc="text", disable=not progress)
    text.train()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = cfg.text_lr * min(1.0, (step + 1) / 100) * _cosine(step, cfg.text_steps, 0.1)
        g = _step_generator(cfg.seed, 4, step)
        idx = torch.randint(len(ids), (cfg.text_batch,), generator=g)
        batch_ids, batch_labels = ids[idx].clone(), labels[idx].clone()
        if cfg.text_reads == "end":
            drop = torch.rand(cfg.text_batch, generator=g) < cfg.cfg_dropout
            batch_ids[drop], batch_labels[drop] = empty_ids, empty_labels
        attribute, end_distance, _ = _text_losses(text, heads, batch_ids, batch_labels, empty_ids, tok.eos_token_id, cfg.text_reads)
        loss = attribute + cfg.text_end_weight * end_distance if cfg.text_reads == "words" else attribute
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(attribute=f"{attribute.item():.4f}", end=f"{end_distance.item():.4f}")
        if step % 50 == 0:
            _log(out, {"stage": "text", "step": step, "loss": attribute.item(), "end_distance": end_distance.item(), "time": time.time()})
        report(callback, step + 1, cfg.text_steps, lambda _: None)  # short: a cancelled stage is redone
    text.eval().requires_grad_(False)
    with torch.no_grad():  # held-out check on fresh captions, logged for the closing note
        _, check_meta = world.make_dataset(512, seed=cfg.seed + 1)
        check = check_meta["TEXT"].tolist()
        check_labels = caption_labels(check)
        _, end_distance, pooled = _text_losses(text, heads, _token_ids(tok, check), check_labels, empty_ids, tok.eos_token_id, cfg.text_reads)
        accuracy = {a: float((heads[a](pooled).argmax(1) == check_labels[:, i]).float().mean()) for i, a in enumerate(heads)}
    _log(out, {"stage": "text_done", "heldout_accuracy": accuracy, "heldout_end_distance": end_distance.item(), "time": time.time()})
    text.save_pretrained(final, safe_serialization=True)
    return text


def train_unet(
    out: Path, latents: np.ndarray, captions: list[str], tok, text, cfg: TrainConfig, progress: bool = True,
    images: np.ndarray | None = None, init=None, stage: int = 2, callback: Callable[[int, int], None] | None = None,
):
    """Stage 5: the UNet against the frozen text encoder, v-prediction, CFG dropout, EMA weights.

    ``images`` (the training images) are needed when ``cfg.unet_foreground_weight`` is set;
    ``init`` is a UNet to start from (fine-tuning) instead of fresh weights.
    ``callback(step, total)`` runs after each step (a panel's progress bar); when it
    raises (``Cancelled``), the step's state is checkpointed first, so a rerun resumes there.
    """
    torch.manual_seed(cfg.seed)
    unet = model_lib.build_unet(cfg.model) if init is None else copy.deepcopy(init).requires_grad_(True)
    text = text.requires_grad_(False).eval()
    ema_unet = copy.deepcopy(unet).requires_grad_(False)
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.01)
    ckpt_path, start = out / "unet.ckpt", 0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=True)
        unet.load_state_dict(state["unet"]), ema_unet.load_state_dict(state["ema_unet"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    sched = model_lib.build_noise_scheduler()
    alphas_cumprod = sched.alphas_cumprod
    snr = alphas_cumprod / (1 - alphas_cumprod)
    # Loss on v weighs x0's error by SNR + 1; cap that at gamma + 1 (min-SNR-gamma), keeping weight 1 at SNR 0.
    weights = (torch.clamp(snr, max=cfg.min_snr_gamma) + 1) / (snr + 1)

    states, row = _encode_captions(text, _token_ids(tok, captions))
    empty_state = _encode_captions(text, _token_ids(tok, [""]))[0]
    z_all = torch.from_numpy(latents)
    if cfg.unet_foreground_weight:
        if images is None:
            raise ValidationError("unet_foreground_weight: needs the training images to find the shapes")
        masks = latent_foreground(images, latents.shape[-1])
    last_save = time.monotonic()
    unet.train()

    def save(step: int) -> None:
        _save_checkpoint(ckpt_path, {
            "step": step, "unet": unet.state_dict(), "ema_unet": ema_unet.state_dict(), "opt": opt.state_dict(),
        })

    bar = tqdm(range(start, cfg.unet_steps), initial=start, total=cfg.unet_steps, desc="unet", disable=not progress)
    for step in bar:
        lr = cfg.unet_lr * min(1.0, (step + 1) / cfg.warmup_steps) * _cosine(step, cfg.unet_steps, cfg.unet_final_lr_fraction)
        for group in opt.param_groups:
            group["lr"] = lr
        g = _step_generator(cfg.seed, stage, step)
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
            _log(out, {"stage": "unet", "step": step, "loss": loss.item(), "time": time.time()})
        if time.monotonic() - last_save > cfg.checkpoint_minutes * 60:
            save(step + 1)
            last_save = time.monotonic()
        report(callback, step + 1, cfg.unet_steps, save)
    save(cfg.unet_steps)
    return ema_unet.eval(), text


def _drop_source_paths(pipeline_dir: Path) -> None:
    """Remove ``_name_or_path`` from the saved component configs.

    diffusers and transformers record where a component was loaded from; in an
    exported pipeline that is a path on the training machine, meaningless (and
    leaking) anywhere else.
    """
    for config in sorted(pipeline_dir.glob("*/config.json")):
        saved = json.loads(config.read_text(encoding="utf-8"))
        if "_name_or_path" in saved:
            del saved["_name_or_path"]
            atomic_write_text(config, json.dumps(saved, indent=2, sort_keys=True) + "\n")


def export_pipeline(out: Path, vae, text, unet, tok, preview: dict, cfg: TrainConfig, defaults: dict | None = None, name: str = PIPELINE_DIR) -> Path:
    """Save a standard diffusers ``StableDiffusionPipeline`` directory plus ``sdlab.json``."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from ..models import SDLAB_META, MODEL_DEFAULTS

    scheduler = DPMSolverMultistepScheduler.from_config(model_lib.build_noise_scheduler().config)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    target = out / name
    pipe.save_pretrained(target, safe_serialization=True)
    _drop_source_paths(target)
    tokenizer_lib.write_vocab_files(tok, target / "tokenizer")
    meta = {
        "name": "shapes-world",
        "defaults": defaults or {**MODEL_DEFAULTS, "width": world.IMAGE_SIZE, "height": world.IMAGE_SIZE},
        "preview": preview,
        "training": {k: v for k, v in asdict(cfg).items()},
        "vocabulary": world.vocabulary(),
    }
    atomic_write_text(target / SDLAB_META, json.dumps(meta, indent=2))
    return target


def export_checkpoint(out_dir: str | Path, target: str | Path | None = None, checkpoint: str | Path | None = None) -> Path:
    """Export a pipeline from a run's latest UNet checkpoint (or ``checkpoint``), EMA weights, mid-training.

    Uses the fine-tuned decoder when that stage has finished, else the VAE.
    """
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    out = Path(out_dir)
    cfg = config_from_dict(json.loads((out / "train_config.json").read_text()))
    state = torch.load(Path(checkpoint) if checkpoint else out / "unet.ckpt", weights_only=True)
    tok = CLIPTokenizer.from_pretrained(out / "tokenizer")
    unet = model_lib.build_unet(cfg.model)
    unet.load_state_dict(state["ema_unet"])
    text = CLIPTextModel.from_pretrained(out / "text_encoder")
    vae_dir = out / "vae_decoder" if (out / "vae_decoder" / "config.json").exists() else out / "vae"
    vae = AutoencoderKL.from_pretrained(vae_dir)
    latents = np.load(out / "latents.npy")
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    images, _ = prepare_data(out, cfg)
    preview = fit_preview_factors(latents * scaling, images)
    destination = Path(target) if target else out / f"pipeline-step{state['step']}"
    export_pipeline(destination.parent, vae, text.eval(), unet.eval(), tok, preview, cfg, name=destination.name)
    return destination


def train(out_dir: str | Path, cfg: TrainConfig = TrainConfig(), progress: bool = True,
          callback: Callable[[int, int], None] | None = None) -> Path:
    """Run (or resume) every stage and return the exported pipeline directory.

    ``callback(done, total)`` counts the steps of all four trained stages (VAE,
    text encoder, UNet, decoder) as one run; when it raises (a panel's Cancel),
    the stage in progress checkpoints and a rerun resumes there.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "train_config.json", json.dumps(asdict(cfg), indent=2))
    started = time.time()
    total = cfg.vae_steps + cfg.text_steps + cfg.unet_steps + cfg.decoder_steps

    def after(offset: int) -> Callable[[int, int], None] | None:
        return None if callback is None else (lambda step, _stage_total: callback(offset + step, total))

    images, meta = prepare_data(out, cfg)
    tok = tokenizer_lib.save_tokenizer(world.vocabulary(), out / "tokenizer")
    vae = train_vae(out, images, cfg, progress, after(0))
    vae.requires_grad_(False)
    latents = encode_latents(out, vae, images, progress=progress)
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    scaled = latents * scaling
    preview = fit_preview_factors(scaled, images)
    text = pretrain_text_encoder(out, meta["TEXT"].tolist(), tok, cfg, progress, after(cfg.vae_steps))
    unet, text = train_unet(out, scaled, meta["TEXT"].tolist(), tok, text, cfg, progress, images=images,
                            callback=after(cfg.vae_steps + cfg.text_steps))
    vae = finetune_decoder(out, vae, images, cfg, progress, after(cfg.vae_steps + cfg.text_steps + cfg.unet_steps))
    vae.register_to_config(scaling_factor=scaling)
    target = export_pipeline(out, vae, text, unet, tok, preview, cfg)
    _log(out, {"stage": "done", "seconds_this_run": time.time() - started, "time": time.time()})
    return target
