"""Train a ControlNet: a trainable copy of the UNet's encoder, joined to the locked UNet by zero convolutions.

ControlNet (Zhang, Rao & Agrawala 2023) leaves the trained model alone (the *locked* copy) and
learns a condition (edges, a mask, depth) in a *trainable copy* of its encoder and middle block,
whose outputs are added to the locked UNet's skip connections through *zero convolutions*
(1x1 convolutions whose weights and biases start at 0). Before any step the ControlNet therefore
adds exactly nothing, and the first steps cannot wreck the model, which is why it trains with
a small budget. The copy is diffusers' own ``ControlNetModel.from_unet``, so what comes out loads
with ``ControlNetModel.from_pretrained`` and runs in ``StableDiffusionControlNetPipeline``.

The loop, step by step:

1. encode every image once with the VAE (posterior mean) and every distinct caption once with the
   text encoder (both frozen; cached in the run directory);
2. per step draw a batch, a timestep and noise from a generator seeded by (seed, step), so a
   resumed run draws what the uninterrupted one would have;
3. drop a share of the captions (the empty prompt): the map, not the text, must carry the layout,
   and classifier-free guidance's unconditional branch runs the ControlNet too;
4. predict with the locked UNet plus the ControlNet's residuals; the loss is the squared error in the
   model's own prediction type (epsilon or v), min-SNR-gamma weighted; only the ControlNet learns;
5. optionally (``guided_weight``) predict the same batch once more under the empty prompt, as classifier-free
   guidance will, and add a loss on the guided prediction ``u + g (c - u)``: at generation CFG multiplies what the
   prompt adds while the control, present in both halves, cancels out of the difference, so a ControlNet trained
   only on ``c`` follows its map less the higher the CFG. A step then costs about twice as much.

The pipeline handed in is not changed: the locked UNet is a frozen copy of its UNet.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ValidationError
from ..io import atomic_path, atomic_write_text
from ..images import latent_cells
from ..progress import Callback, Checkpointer, Reporter, read_checkpoint
from ..schedules import LR_SCHEDULERS, lr_factor
from ..trainlog import append_log
from ..validation import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, SEED, UNIT, Check, Options, invalid, validate_fields

SUPPORTED_FAMILIES = ("sd1", "sd2")  # a ControlNet from_unet of these runs in StableDiffusionControlNetPipeline
CONTROLNET_DIR = "controlnet"  # the trained ControlNet, in diffusers' format, inside the run directory
CHECKPOINT = "controlnet.ckpt"
RUN_CONFIG = "controlnet_config.json"
SNAPSHOTS = "snapshots"
DIFFUSERS_EMBEDDING = (16, 32, 96, 256)  # ControlNetConditioningEmbedding's default: three 2x downsamplings (SD's VAE)


def _channels_ok(value) -> bool:
    return value is None or (isinstance(value, tuple) and len(value) >= 1 and all(isinstance(c, int) and c > 0 for c in value))


def _range_ok(value) -> bool:
    return value is None or (isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value) and 0 <= value[0] < value[1])


@dataclass(frozen=True)
class ControlNetConfig:
    """What decides a ControlNet run (with the base model and the data, it is reproducible)."""

    steps: int = 2500  # optimiser steps
    batch: int = 32  # images per step
    lr: float = 5e-4  # AdamW learning rate after warm-up
    warmup_steps: int = 50  # linear warm-up from 0
    lr_scheduler: str = "constant"  # after the warm-up: "constant" (ControlNet's recipe) or "cosine" toward 0 by the last step
    text_dropout: float = 0.2  # share of captions replaced by the empty prompt (ControlNet: 0.5)
    min_snr_gamma: float = 5.0  # min-SNR-gamma loss weighting (Hang et al. 2023); 0: plain mean squared error
    focus_weight: float = 0.0  # extra loss weight on latent cells at and next to the subject (the ``focus`` maps); 0: plain loss
    weight_decay: float = 0.0  # AdamW weight decay (0: the zero convolutions are not pulled anywhere)
    seed: int = 0  # the ControlNet's fresh layers and every batch, timestep and noise draw
    checkpoint_minutes: float = 3.0  # wall-clock interval of the resumable checkpoint
    snapshot_every: int = 0  # keep the ControlNet every N steps under snapshots/ (fidelity over training); 0: none
    log_every: int = 25  # steps between lines in train_log.jsonl
    embedding_channels: tuple | None = None  # the condition encoder's channels; None: diffusers' cut to the VAE's downsampling
    guided_weight: float = 0.0  # weight of the loss on the CFG-guided prediction u + g (c - u) (0: off; the plain loss stays)
    guided_cfg: float = 5.0  # the CFG scale g of that loss (the model's generation default, for the shapes world)
    unconditional_weight: float = 0.5  # with the guided loss: weight of the loss on the empty prompt's prediction u
    timestep_range: tuple | None = None  # (lo, hi): draw the training timesteps from [lo, hi) only (None: all); low ones refine outlines, high ones place the layout

    _parameter_constraints = {
        "steps": [POSITIVE_INT], "batch": [POSITIVE_INT], "lr": [POSITIVE], "warmup_steps": [NON_NEGATIVE_INT], "lr_scheduler": [Options(LR_SCHEDULERS)],
        "text_dropout": [UNIT], "min_snr_gamma": [NON_NEGATIVE], "focus_weight": [NON_NEGATIVE], "weight_decay": [NON_NEGATIVE], "seed": [SEED],
        "checkpoint_minutes": [NON_NEGATIVE], "snapshot_every": [NON_NEGATIVE_INT], "log_every": [POSITIVE_INT],
        "embedding_channels": [Check(_channels_ok, "a tuple of positive channel counts or None")],
        "guided_weight": [NON_NEGATIVE], "guided_cfg": [POSITIVE], "unconditional_weight": [NON_NEGATIVE],
        "timestep_range": [Check(_range_ok, "None or a (lo, hi) pair of integers with 0 <= lo < hi")],
    }

    def __post_init__(self) -> None:
        validate_fields(self)


def embedding_channels(vae_scale_factor: int, cfg: ControlNetConfig) -> tuple[int, ...]:
    """The condition encoder's channels: one more entry than the VAE's 2x downsamplings, so the map lands on the latent grid."""
    if cfg.embedding_channels is not None:
        return tuple(cfg.embedding_channels)
    levels = int(round(np.log2(vae_scale_factor)))
    return DIFFUSERS_EMBEDDING[: levels + 1] if levels + 1 <= len(DIFFUSERS_EMBEDDING) else DIFFUSERS_EMBEDDING


def _stack_maps(maps, n: int, size: tuple[int, int]) -> np.ndarray:
    """Condition maps as uint8 (variants, N, H, W, 3); several variants (one per preprocessor) are drawn from per sample."""
    variants = [maps] if isinstance(maps, np.ndarray) else list(maps)
    arrays = [np.asarray(v) for v in variants]
    for a in arrays:
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[0] != n or a.shape[1:3] != size or a.shape[3] != 3:
            raise invalid("maps", f"array of shape {a.shape} and dtype {a.dtype}",
                          f"uint8 arrays (N, H, W, 3) matching the images ({n}, {size[0]}, {size[1]}, 3)")
    return np.stack(arrays)


def check_data(images: np.ndarray, captions: Sequence[str], maps, focus=None, focus_weight: float = 0.0) -> np.ndarray:
    """Refuse mismatched data in one line before any model work; return the maps stacked."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 or len(images) == 0:
        raise invalid("images", f"array of shape {images.shape} and dtype {images.dtype}", "a uint8 array (N, H, W, 3), N >= 1")
    if len(captions) != len(images) or not all(isinstance(c, str) for c in captions):
        raise invalid("captions", f"{len(captions)} items", f"one string per image ({len(images)})")
    if focus is not None and np.asarray(focus).shape != images.shape[:3]:
        raise invalid("focus", f"an array of shape {np.asarray(focus).shape}", f"one (H, W) map per image {images.shape[:3]}")
    if focus_weight and focus is None:
        raise invalid("focus", None, "per-image maps of the subject (N, H, W) when focus_weight is not 0")
    return _stack_maps(maps, len(images), images.shape[1:3])


def data_fingerprint(images: np.ndarray, captions: Sequence[str], maps: np.ndarray, focus: np.ndarray | None = None) -> str:
    """A short hash of the training data: a run directory resumes only on the data it started with."""
    h = hashlib.sha256()
    for part in (np.ascontiguousarray(images).tobytes(), "\n".join(captions).encode(), np.ascontiguousarray(maps).tobytes()):
        h.update(part)
    if focus is not None:
        h.update(np.ascontiguousarray(focus, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def save_model_dir(model, path: Path) -> Path:
    """``model.save_pretrained`` (safetensors) into a fresh directory renamed over ``path``: whole or absent."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def timestep_bounds(cfg: ControlNetConfig, num_train_timesteps: int) -> tuple[int, int]:
    """The [lo, hi) the run draws its timesteps from; a range past the scheduler's timesteps is refused in one line."""
    lo, hi = cfg.timestep_range or (0, num_train_timesteps)
    if hi > num_train_timesteps:
        raise invalid("timestep_range", tuple(cfg.timestep_range), f"a (lo, hi) pair with 0 <= lo < hi <= {num_train_timesteps} (the model's timesteps)")
    return lo, hi


def _step_generator(seed: int, step: int):
    import torch

    return torch.Generator().manual_seed(seed * 1_000_003 + 24 * 100_003 + step)


def loss_weights(alphas_cumprod, prediction_type: str, gamma: float):
    """Per-timestep min-SNR-gamma weights for a loss on ``prediction_type`` (1 everywhere when gamma is 0)."""
    import torch

    snr = (alphas_cumprod / (1 - alphas_cumprod)).clamp(min=1e-8)
    if not gamma:
        return torch.ones_like(snr)
    capped = torch.clamp(snr, max=gamma)
    if prediction_type == "v_prediction":  # v's error weighs x0's by SNR + 1
        return (capped + 1) / (snr + 1)
    if prediction_type == "epsilon":  # epsilon's error weighs x0's by SNR
        return capped / snr
    return capped


def _loss(pred, target, w_t, cell=None):
    """Squared error per sample, the subject's cells weighted by ``cell`` (mean 1 per image), times ``w_t``; the batch mean."""
    error = (pred - target).pow(2)
    if cell is not None:
        error = error * cell / cell.mean(dim=(1, 2, 3), keepdim=True)
    return (w_t * error.mean(dim=(1, 2, 3))).mean()


def _encode(pipe, images: np.ndarray, captions: Sequence[str], out: Path):
    """VAE posterior means (scaled) and the text states of each distinct caption, cached in ``out``."""
    import torch

    from ..images import to_tensor

    cache = out / "encoded.pt"
    if cache.exists():
        return read_checkpoint(cache)
    with torch.no_grad():
        latents = torch.cat([
            pipe.vae.encode(to_tensor(images[i:i + 256]).to(pipe.vae.device, pipe.vae.dtype)).latent_dist.mean
            for i in range(0, len(images), 256)
        ]).float() * pipe.vae.config.scaling_factor
        distinct = sorted(set(captions) | {""})
        index = {c: i for i, c in enumerate(distinct)}
        ids = pipe.tokenizer(distinct, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        states = torch.cat([pipe.text_encoder(ids[i:i + 256].to(pipe.text_encoder.device))[0] for i in range(0, len(ids), 256)]).float()
    encoded = {"latents": latents, "states": states, "row": torch.tensor([index[c] for c in captions]), "empty": index[""]}
    with atomic_path(cache) as tmp:
        torch.save(encoded, tmp)
    return encoded


def _init_record(init) -> str | None:
    """What a run started from, for its config: the ControlNet's name and a hash of its weights (None: a fresh copy)."""
    if init is None:
        return None
    from ..control.nets import name_and_hash

    digest = hashlib.sha256()
    for key, tensor in sorted(init.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return f"{name_and_hash(init)[0]} [{digest.hexdigest()[:12]}]"


# Settings that do not change the trajectory: a run may be resumed with more steps (with a constant learning
# rate a longer run passes through the shorter one; a cosine's steps set its whole curve) or other bookkeeping.
FREE_ON_RESUME = ("steps", "checkpoint_minutes", "snapshot_every", "log_every")
_DEFAULTS = asdict(ControlNetConfig())  # a setting a run's saved config lacks (it predates it) had its default


def _check_run_dir(out: Path, record: dict) -> None:
    """A run directory resumes only with the config and data it started with (``steps`` may grow)."""
    path = out / RUN_CONFIG
    if path.exists():
        old = json.loads(path.read_text())
        free = FREE_ON_RESUME if record.get("lr_scheduler") == "constant" else tuple(k for k in FREE_ON_RESUME if k != "steps")
        changed = sorted(k for k in set(old) | set(record) if k not in free and old.get(k, _DEFAULTS.get(k)) != record.get(k))
        if changed:
            raise invalid("out", str(out), f"a new directory or this run's own settings (it was started with other {', '.join(changed)})")
    atomic_write_text(path, json.dumps(record, indent=2))


def train_controlnet(
    pipe, images: np.ndarray, captions: Sequence[str], maps, out_dir: str | Path, cfg: ControlNetConfig = ControlNetConfig(),
    callback: Callback | None = None, progress: bool = True, describe: dict | None = None, focus: np.ndarray | None = None,
    init=None,
) -> Path:
    """Train a ControlNet for ``pipe``'s UNet on (image, caption, condition map) triples; return its directory.

    ``maps`` is a uint8 (N, H, W, 3) array of white-on-black condition maps, or a list of such arrays (one per
    preprocessor; each sample draws one). Killed or cancelled (``callback`` raising), the run resumes from its
    checkpoint when called again with the same ``out_dir``. ``describe`` (what the data is) is kept in the run's config.
    ``focus`` (N, H, W) marks each image's subject; with ``cfg.focus_weight`` the loss on the latent cells it touches
    (and their neighbours) weighs ``1 + focus_weight`` times as much: a small shape covers a few of the latent cells,
    and under plain MSE the map's layout is a small share of the loss.
    ``init`` (a ``ControlNetModel`` for this UNet) is the ControlNet to continue from, as diffusers'
    ``train_controlnet.py --controlnet_model_name_or_path``; None starts from a fresh copy with zero convolutions.
    It is copied: the model handed in is not changed.
    """
    import torch
    from diffusers import ControlNetModel, DDPMScheduler

    from ..models import family

    stacked = check_data(images, captions, maps, focus, cfg.focus_weight)
    fam = family(pipe)
    if fam not in SUPPORTED_FAMILIES:
        raise ValidationError(f"pipe: a {fam} model is not valid; valid: a ControlNet is trained here for "
                              f"{' and '.join(SUPPORTED_FAMILIES)} UNets (StableDiffusionControlNetPipeline)")
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    lo, hi = timestep_bounds(cfg, sched.config.num_train_timesteps)
    if init is not None and not isinstance(init, ControlNetModel):
        raise invalid("init", type(init).__name__, "a diffusers ControlNetModel (sdlab.control.nets.load_controlnet) or None")
    on_record = _init_record(init)
    locked = copy.deepcopy(pipe.unet).float().requires_grad_(False).eval()  # the user's UNet is never touched
    torch.manual_seed(cfg.seed)
    controlnet = ControlNetModel.from_unet(locked, conditioning_embedding_out_channels=embedding_channels(pipe.vae_scale_factor, cfg))
    if init is not None:  # a ControlNet that does not fit is refused before the run directory is written or the data encoded
        try:
            controlnet.load_state_dict(init.state_dict())
        except RuntimeError:
            raise invalid("init", on_record, "a ControlNet of this UNet's shape with this run's embedding_channels") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_run_dir(out, {**asdict(cfg), "embedding_channels": list(embedding_channels(pipe.vae_scale_factor, cfg)),
                         "timestep_range": list(cfg.timestep_range) if cfg.timestep_range else None, "init": on_record,
                         "data": data_fingerprint(images, captions, stacked, focus if cfg.focus_weight else None), "n_images": len(images), **(describe or {})})
    started = time.time()
    encoded = _encode(pipe, np.asarray(images), list(captions), out)
    device = pipe.unet.device
    controlnet.to(device).train()
    opt = torch.optim.AdamW(controlnet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    prediction = sched.config.prediction_type
    weights = loss_weights(sched.alphas_cumprod, prediction, cfg.min_snr_gamma)
    ckpt_path, start = out / CHECKPOINT, 0
    if ckpt_path.exists():
        state = read_checkpoint(ckpt_path)
        controlnet.load_state_dict(state["controlnet"])
        opt.load_state_dict(state["opt"])
        start = state["step"]

    def save(step: int) -> None:
        with atomic_path(ckpt_path) as tmp:
            torch.save({"step": step, "controlnet": controlnet.state_dict(), "opt": opt.state_dict()}, tmp)

    def predict(z_t, t, context, cond):  # the locked UNet with the ControlNet's residuals
        down, mid = controlnet(z_t, t, context, controlnet_cond=cond, return_dict=False)
        return locked(z_t, t, context, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample.float()

    latents, states, row, empty = encoded["latents"], encoded["states"], encoded["row"], encoded["empty"]
    maps_t = torch.from_numpy(stacked)  # uint8 (variants, N, H, W, 3)
    cells = latent_cells(focus, tuple(latents.shape[-2:])) if cfg.focus_weight else None
    checkpointer = Checkpointer(save, cfg.checkpoint_minutes)
    with Reporter(callback, progress, desc="controlnet") as reporter:
        for step in range(start, cfg.steps):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_factor(step, cfg.steps, cfg.warmup_steps, cfg.lr_scheduler)
            g = _step_generator(cfg.seed, step)
            idx = torch.randint(len(latents), (cfg.batch,), generator=g)
            variant = torch.randint(len(maps_t), (cfg.batch,), generator=g)
            drop = torch.rand(cfg.batch, generator=g) < cfg.text_dropout
            t = torch.randint(lo, hi, (cfg.batch,), generator=g)
            z0 = latents[idx]
            eps = torch.randn(z0.shape, generator=g)
            cond = maps_t[variant, idx].permute(0, 3, 1, 2).float().div(255.0)  # [0, 1], as the pipeline hands it in
            context = states[torch.where(drop, torch.full_like(idx, empty), row[idx])]
            z_t = sched.add_noise(z0, eps, t)
            target = sched.get_velocity(z0, eps, t) if prediction == "v_prediction" else (z0 if prediction == "sample" else eps)
            z_t, t, context, cond, target = (x.to(device) for x in (z_t, t, context, cond, target))
            cell = None if cells is None else (1.0 + cfg.focus_weight * cells[idx]).to(device)
            w_t = weights[t.cpu()].to(device)
            if cfg.guided_weight:  # CFG's batch, unconditional half first: both halves see the map, as at generation
                uncond = states[torch.full_like(idx, empty)].to(device)
                u, c = predict(*map(torch.cat, ((z_t, z_t), (t, t), (uncond, context), (cond, cond)))).chunk(2)
                loss = (_loss(c, target, w_t, cell) + cfg.unconditional_weight * _loss(u, target, w_t, cell)
                        + cfg.guided_weight * _loss(u + cfg.guided_cfg * (c - u), target, w_t, cell))
            else:
                loss = _loss(predict(z_t, t, context, cond), target, w_t, cell)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
            opt.step()
            if step % cfg.log_every == 0 or step + 1 == cfg.steps:
                append_log(out, {"stage": "controlnet", "step": step, "loss": loss.item(), "time": time.time(), "load": os.getloadavg()[0]})
            if cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0:
                save_model_dir(controlnet, out / SNAPSHOTS / f"step-{step + 1:06d}")
            checkpointer.step(step + 1, cfg.steps, reporter)
    save(cfg.steps)
    target_dir = save_model_dir(controlnet.eval(), out / CONTROLNET_DIR)
    append_log(out, {"stage": "controlnet_done", "seconds_this_run": time.time() - started, "time": time.time()})
    return target_dir


def snapshots(out_dir: str | Path) -> list[tuple[int, Path]]:
    """The ControlNets a run kept along the way (``snapshot_every``), as (step, directory), in step order."""
    folder = Path(out_dir) / SNAPSHOTS
    if not folder.is_dir():
        return []
    found = [(int(p.name.split("-")[1]), p) for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-")]
    return sorted(found)
