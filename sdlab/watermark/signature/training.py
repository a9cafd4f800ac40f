"""Training a Stable Signature: the extractor (stage 1), then a marked copy of the decoder (stage 2); resumable."""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ...errors import ModelNotFoundError, ValidationError
from ...images import to_tensor
from ...io import append_jsonl, atomic_path, atomic_write_text
from ...progress import Callback, Checkpointer, Reporter, read_checkpoint
from ...validation import Check, invalid, validate_params
from .augmentations import augment
from .config import CHECKPOINT, CONFIG, DECODER, EXTRACTOR, Dataset, SignatureConfig
from .nets import build_embedder, build_extractor

_DATASET = Check(callable, "a function dataset(n, seed) returning n RGB uint8 images (n, height, width, 3)")


def _decoder_params(vae) -> list:
    return list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())


def _decoder_state(vae) -> dict:
    state = {f"decoder.{k}": v for k, v in vae.decoder.state_dict().items()}
    state.update({f"post_quant_conv.{k}": v for k, v in vae.post_quant_conv.state_dict().items()})
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _training_data(vae, dataset: Dataset, n_images: int, seed: int, n_photos: int = 0):
    """Stage 1's images in [-1, 1] (``dataset``'s images, then ``n_photos`` calibration crops of
    ``cleanset``, none of the held-out photos :func:`measure` reads) and the dataset images'
    posterior means, unscaled (stage 2: what the decoder sees)."""
    import torch

    from ..cleanset import clean_images

    images = np.asarray(dataset(n_images, seed))
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) != n_images:
        raise invalid("dataset", f"images of shape {images.shape} and type {images.dtype}",
                      f"{n_images} RGB uint8 images (n, height, width, 3)")
    x = to_tensor(images)
    with torch.no_grad():
        latents = torch.cat([vae.encode(x[i:i + 256]).latent_dist.mean for i in range(0, len(x), 256)])
    if n_photos:
        size = images.shape[1]
        photos = np.stack([im for _, im in clean_images(n_photos, seed=seed, size=size, kinds=("photo",))])
        x = torch.cat([x, to_tensor(photos)])
    return x, latents


def train(pipe, out: str | Path, cfg: SignatureConfig | None = None, progress: bool = True,
          callback: Callback | None = None, extractor_from: str | Path | None = None, *, dataset: Dataset) -> Path:
    """Train the extractor (stage 1), then fine-tune a copy of ``pipe``'s decoder to ``cfg``'s key (stage 2); resumable.

    ``dataset(n, seed)`` gives the model's own kind of images (``cfg.n_images`` of them, from
    ``cfg.seed``): stage 1 hides messages in them, stage 2 decodes their latents. Writes
    ``out``/decoder.safetensors, extractor.safetensors and signature.json (config, key,
    and, after :func:`measure`, the figures it found). ``callback(step, total)`` runs after each
    step of either stage; when it raises (a Cancel), the step is checkpointed first.

    ``extractor_from``: a trained signature directory whose extractor stage 2 reads with; stage 1
    is skipped. As in the paper, one extractor serves many decoders: another key, or another
    model with the same latent space's images, costs stage 2 only.
    """
    import torch

    validate_params({"dataset": dataset}, {"dataset": [_DATASET]})
    cfg = cfg or SignatureConfig()
    out = Path(out)
    source = extractor_source(extractor_from, cfg) if extractor_from is not None else None
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    base = copy.deepcopy(pipe.vae).float().eval().requires_grad_(False)
    marked = copy.deepcopy(base)
    decoder_params = _decoder_params(marked)
    for p in decoder_params:
        p.requires_grad_(True)
    extractor = build_extractor(cfg.n_bits, cfg.extractor_width)
    embedder = build_embedder(cfg.n_bits, cfg.extractor_width)
    hidden_opt = torch.optim.Adam(list(extractor.parameters()) + list(embedder.parameters()), lr=cfg.lr)
    decoder_opt = torch.optim.Adam(decoder_params, lr=cfg.decoder_lr)
    modules = {"vae": marked, "extractor": extractor, "embedder": embedder, "hidden_opt": hidden_opt, "decoder_opt": decoder_opt}
    ckpt, start, total = out / CHECKPOINT, 0, cfg.extractor_steps + cfg.steps
    if source is not None:
        from safetensors.torch import load_file

        extractor.load_state_dict(load_file(str(source / EXTRACTOR)))
        start = cfg.extractor_steps
    if ckpt.exists():
        state = read_checkpoint(ckpt)
        if state["config"] != _checkpoint_key(cfg, source):
            raise ValidationError(f"out: {out} holds a checkpoint of another configuration; use a new directory")
        for name, module in modules.items():
            module.load_state_dict(state[name])
        start = state["step"]

    def save(step: int) -> None:
        with atomic_path(ckpt) as tmp:
            torch.save({"step": step, "config": _checkpoint_key(cfg, source),
                        **{name: module.state_dict() for name, module in modules.items()}}, tmp)

    images, latents = _training_data(base, dataset, cfg.n_images, cfg.seed, 0 if source else cfg.n_photos)  # photos: stage 1 only
    key = torch.from_numpy(cfg.key()).float().expand(cfg.batch, cfg.n_bits)
    bce = torch.nn.BCEWithLogitsLoss()
    checkpointer = Checkpointer(save, cfg.checkpoint_minutes)
    with Reporter(callback, progress, desc="signature") as reporter:
        for step in range(start, total):
            if step == max(start, cfg.extractor_steps):
                extractor.requires_grad_(False)  # stage 2 reads with the extractor stage 1 made
            stage = 1 if step < cfg.extractor_steps else 2
            rng = np.random.default_rng([cfg.seed, step])
            pick = torch.from_numpy(rng.integers(0, len(images) if stage == 1 else len(latents), cfg.batch))
            augmentation = (cfg.augmentations[int(rng.integers(len(cfg.augmentations)))]
                            if step >= min(cfg.clean_steps, cfg.extractor_steps) else "none")
            if stage == 1:  # hide random messages, read them back
                x = images[pick]
                message = torch.from_numpy(rng.integers(0, 2, (cfg.batch, cfg.n_bits))).float()
                residual = embedder(x, message)
                bits_loss = bce(extractor(augment((x + residual).clamp(-1, 1), augmentation, rng)), message)
                image_loss = residual.pow(2).mean()
                faint = step >= cfg.extractor_steps - cfg.faint_steps
                loss, opt = bits_loss + (cfg.faint_embed_weight if faint else cfg.embed_weight) * image_loss, hidden_opt
            else:  # stage 2: the decoder learns to draw the key, the extractor frozen
                z = latents[pick]
                with torch.no_grad():
                    clean = base.decode(z).sample
                drawn = marked.decode(z).sample
                bits_loss = bce(extractor(augment(drawn.clamp(-1, 1), augmentation, rng)), key)
                image_loss = (drawn - clean).pow(2).mean()
                loss, opt = bits_loss + cfg.image_weight * image_loss, decoder_opt
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if reporter.bar is not None:
                reporter.bar.set_postfix(stage=stage, bits=f"{bits_loss.item():.3f}", image=f"{image_loss.item():.5f}", aug=augmentation)
            if step % 50 == 0 or step == cfg.extractor_steps:  # and stage 2's first step, which a reused extractor starts at
                append_jsonl(out / "train_log.jsonl", {"stage": f"signature-{stage}", "step": step,
                                                       "loss": bits_loss.item(), "image_loss": image_loss.item(), "time": time.time()})
            checkpointer.step(step + 1, total, reporter)
    save(total)
    return export(out, marked, extractor.eval(), cfg, source)


def extractor_source(directory: str | Path, cfg: SignatureConfig) -> Path:
    """The signature directory ``extractor_from`` names, checked to read ``cfg``'s key length with ``cfg``'s width (before any work)."""
    directory = Path(directory)
    if not (directory / CONFIG).is_file() or not (directory / EXTRACTOR).is_file():
        raise ModelNotFoundError(f"extractor_from: no trained signature at {directory} (it needs {CONFIG} and {EXTRACTOR})")
    theirs = json.loads((directory / CONFIG).read_text(encoding="utf-8"))["config"]
    for name in ("n_bits", "extractor_width"):
        if theirs[name] != getattr(cfg, name):
            raise ValidationError(f"extractor_from: {directory} has {name} {theirs[name]}, this configuration {getattr(cfg, name)}")
    return directory


def _checkpoint_key(cfg: SignatureConfig, source: Path | None) -> str:
    """What a checkpoint must match to be resumed: the configuration, and the extractor it started from."""
    return json.dumps({**asdict(cfg), **({"extractor_from": str(source.resolve())} if source else {})}, sort_keys=True)


def export(out: Path, marked_vae, extractor, cfg: SignatureConfig, source: Path | None = None) -> Path:
    """Write the marked decoder's and the extractor's weights and ``signature.json`` (with the extractor's origin, if reused)."""
    from safetensors.torch import save_file

    for name, state in ((DECODER, _decoder_state(marked_vae)), (EXTRACTOR, {k: v.contiguous() for k, v in extractor.state_dict().items()})):
        with atomic_path(out / name) as tmp:
            save_file(state, str(tmp))
    meta = {"method": "stable-signature", "config": asdict(cfg), "key": cfg.key().tolist()}
    if source is not None:  # stage 1 did not run here: say whose it was
        meta["extractor_from"] = {"directory": str(source), "config": json.loads((source / CONFIG).read_text(encoding="utf-8"))["config"]}
    atomic_write_text(out / CONFIG, json.dumps(meta, indent=2) + "\n")
    return out
