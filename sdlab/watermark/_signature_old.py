"""Stable Signature: a watermark in the VAE decoder, so every image the model makes carries it (Fernandez et al. 2023).

Tree-Ring hides its key in the starting noise and needs the image to give
that noise back, which the shapes world's images do not (``treering.py``
says why). Stable Signature needs no inversion: the decoder is fine-tuned so
that whatever it draws carries a fixed key of ``n_bits`` bits, which a small
extractor network reads from any image. Nothing in the sampling loop changes,
so no sampler setting turns the mark off; only editing the image (or
swapping the decoder) can.

Training (:func:`train`) follows the paper's two stages. Stage 1 trains a
HiDDeN embedder H and extractor E on random messages m, so E reads any
message and, on an unmarked image, none in particular (trained on one key
alone, it learns to answer "key" for every image). Stage 2 fine-tunes a copy
of the decoder, D_w, so that E (frozen) reads the key from what it draws,
while staying close to the original decoder D_0. Each step draws one
augmentation for its batch (:data:`AUGMENTATIONS`) so the mark survives the
battery's attacks; JPEG passes straight through (forward: the real codec,
backward: identity). The paper's perceptual (Watson-VGG) loss is MSE here::

    stage 1:  BCE(E(aug(x + H(x, m))), m) + embed_weight * mean(H(x, m)^2)
              (faint_embed_weight instead in the last faint_steps; x: shapes-world images and photo crops)
    stage 2:  BCE(E(aug(D_w(z))), key) + image_weight * MSE(D_w(z), D_0(z))

The shipped signature (``sdlab/weights/shapes-world-signature``, 2 MB): its
extractor is stage 1 of ``sdlab watermark signature train`` with this module's
defaults (26.5 min on the 2-core CPU, for the v4 model); its decoder is stage 2
for the shipped v5 model, run with ``--extractor-from`` that signature (8.1
min; ``signature.json`` says so under "extractor_from"). What made it work,
measured in pilots: the embedder's message as a spatial map (with constant
maps the bits loss was still 0.65 at step 1,250; now 0.29 at 3,000); 4,000
clean steps before the augmentations; a last stretch of stage 1 with the
residual weighed 10x more (residual MSE 0.12 -> 0.03 at the same bits loss),
so E reads a mark as faint as the decoder can draw; image_weight 100
(without the faint stretch, 20 for 800 steps gave PSNR 23.6 dB and 50 for
2,400 steps 26.1 dB, both visibly tinting the shapes); and photo crops among
stage 1's images: without them E, which had seen only the shapes world, read
held-out photos as 0.59 key-like and called 6 % of them marked at p <= 1 %.
Figures on 64 seeds and 64 held-out photo crops are in its
``signature.json``: bit accuracy 0.90, TPR 0.97 and FPR 0 at p <= 1 %, photo
bit accuracy 0.52 and photo FPR 0, PSNR 28.3 dB (min 26.2). (v4's decoder,
same extractor: 0.93, TPR 1.0, PSNR 28.7 dB.)

Detection: k of n bits match the key; p = P(Binomial(n, 1/2) >= k). The
false-positive rate on clean images is measured after training and stored
with the weights (``signature.json``), not assumed.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ModelNotFoundError, ValidationError
from ..images import from_tensor, to_tensor
from ..io import append_jsonl, atomic_path, atomic_write_text
from ..progress import report
from .treering import DEFAULT_PROMPTS

SHIPPED_SIGNATURE = Path(__file__).resolve().parent.parent / "weights" / "shapes-world-signature"
CONFIG, DECODER, EXTRACTOR, CHECKPOINT = "signature.json", "decoder.safetensors", "extractor.safetensors", "signature.ckpt"
AUGMENTATIONS = ("none", "jpeg", "resize", "blur", "noise", "photo", "crop", "rotate", "erase")


@dataclass
class SignatureConfig:
    """What decides the marked decoder and its extractor (with ``seed``, a run is reproducible)."""

    n_bits: int = 32
    key_seed: int = 0
    seed: int = 0
    extractor_steps: int = 20000  # stage 1: embedder + extractor on random messages
    clean_steps: int = 4000  # stage 1 steps before the augmentations start (the clean task first, or it barely learns)
    steps: int = 2400  # stage 2: the decoder, extractor frozen
    batch: int = 16
    lr: float = 3e-3
    decoder_lr: float = 1e-4
    embed_weight: float = 0.1  # stage 1: weight of the hidden residual's MSE (10 collapsed the residual to zero)
    faint_steps: int = 4000  # the last stage-1 steps, where the residual's weight is faint_embed_weight ...
    faint_embed_weight: float = 1.0  # ... so E learns to read a faint residual, as the decoder can only draw one
    image_weight: float = 100.0  # stage 2: weight of MSE(marked decoder, original decoder); 20 and 50 left the mark visible
    n_images: int = 4000
    n_photos: int = 1000  # stage 1 also hides messages in calibration photo crops, so on a photo E reads none in particular
    extractor_width: int = 32
    augmentations: tuple[str, ...] = AUGMENTATIONS
    checkpoint_minutes: float = 3.0

    def __post_init__(self) -> None:
        self.augmentations = tuple(self.augmentations)
        for name, low in (("n_bits", 8), ("key_seed", 0), ("extractor_steps", 0), ("clean_steps", 0), ("faint_steps", 0), ("steps", 1), ("batch", 1), ("n_images", 1), ("n_photos", 0), ("extractor_width", 8)):
            if int(getattr(self, name)) < low:
                raise ValidationError(f"{name}: must be at least {low}, got {getattr(self, name)}")
        for name in ("lr", "decoder_lr", "embed_weight", "faint_embed_weight", "image_weight"):
            positive = name.endswith("lr")
            if not getattr(self, name) >= 0 or (positive and getattr(self, name) == 0):
                raise ValidationError(f"{name}: must be {'> 0' if positive else '>= 0'}, got {getattr(self, name)}")
        unknown = set(self.augmentations) - set(AUGMENTATIONS)
        if unknown or not self.augmentations:
            raise ValidationError(f"augmentations: choose from {', '.join(AUGMENTATIONS)}, got {', '.join(sorted(unknown)) or 'none'}")

    def key(self) -> np.ndarray:
        """The ``n_bits`` key bits (0/1), drawn from ``key_seed``."""
        return np.random.default_rng(self.key_seed).integers(0, 2, self.n_bits).astype(np.uint8)


def build_embedder(n_bits: int, width: int = 32):
    """HiDDeN-style embedder: image and message in, a residual out (training only: it keeps E message-agnostic).

    The message reaches the convolutions as a coarse learned spatial map (a linear layer to 4x16x16,
    upsampled), as in StegaStamp. Broadcast as constant maps, as HiDDeN does, it can only shift the
    colour of the shapes world's flat regions: three numbers for 32 bits, and stage 1 barely learned.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Embedder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.carrier = nn.Linear(n_bits, 4 * 16 * 16)
            self.net = nn.Sequential(
                nn.Conv2d(3 + 4, width, 3, 1, 1), nn.GroupNorm(8, width), nn.SiLU(),
                nn.Conv2d(width, width, 3, 1, 1), nn.GroupNorm(8, width), nn.SiLU(),
                nn.Conv2d(width, 3, 1),
            )

        def forward(self, x, bits):
            maps = self.carrier(bits * 2 - 1).view(-1, 4, 16, 16)
            maps = F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)
            return self.net(torch.cat([x, maps], dim=1))

    return Embedder()


def build_extractor(n_bits: int, width: int = 32):
    """HiDDeN-style extractor: conv blocks, one logit map per bit, global average pool (so it reads any size)."""
    from torch import nn

    def block(cin: int, cout: int, stride: int) -> list:
        return [nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU()]

    return nn.Sequential(
        *block(3, width, 1), *block(width, width, 2), *block(width, 2 * width, 2), *block(2 * width, 2 * width, 1),
        nn.Conv2d(2 * width, n_bits, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )


# -- augmentations (torch, images in [-1, 1]) -------------------------------------------------------
def _jpeg(x, quality: int):
    """The battery's JPEG attack in the forward pass, identity in the backward pass."""
    from .attacks import jpeg

    coded = np.stack([jpeg(im, quality) for im in from_tensor(x)])
    return x + (to_tensor(coded) - x).detach()


def _blur(x, sigma: float):
    import torch
    import torch.nn.functional as F

    radius = max(1, math.ceil(2.5 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum())
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def augment(x, name: str, rng: np.random.Generator):
    """One augmentation of a batch, at a strength drawn from ``rng`` (ranges cover the battery's strengths)."""
    import torch
    import torch.nn.functional as F

    size = x.shape[-2:]
    if name == "none":
        return x
    if name == "jpeg":
        return _jpeg(x, int(rng.integers(40, 96)))
    if name == "resize":
        small = F.interpolate(x, scale_factor=float(rng.uniform(0.3, 0.9)), mode="bilinear", antialias=True)
        return F.interpolate(small, size=size, mode="bicubic")
    if name == "blur":
        return _blur(x, float(rng.uniform(0.4, 2.0)))
    if name == "noise":
        g = torch.Generator().manual_seed(int(rng.integers(2**31)))
        return x + torch.randn(x.shape, generator=g) * float(rng.uniform(0.0, 0.08))
    if name == "photo":  # brightness then contrast, as PIL's ImageEnhance (in [0, 1])
        y = (x + 1) / 2 * float(rng.uniform(0.7, 1.6))
        mean = y.mean(dim=(1, 2, 3), keepdim=True)
        y = ((y - mean) * float(rng.uniform(0.7, 1.6)) + mean).clamp(0, 1)
        return y * 2 - 1
    if name == "crop":  # centre crop, read at the extractor's size (detection resizes any image to it)
        keep = float(rng.uniform(0.5, 1.0))
        h, w = size
        ch, cw = max(1, round(h * keep)), max(1, round(w * keep))
        top, left = (h - ch) // 2, (w - cw) // 2
        return F.interpolate(x[..., top:top + ch, left:left + cw], size=size, mode="bicubic")
    if name == "rotate":
        angle = math.radians(float(rng.uniform(-12, 12)))
        theta = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0]], dtype=x.dtype)
        grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(x + 1, grid, align_corners=False) - 1  # outside the image: black, as PIL's rotate
    if name == "erase":
        h, w = size
        frac = float(rng.uniform(0.02, 0.3))
        eh, ew = max(1, round(h * math.sqrt(frac))), max(1, round(w * math.sqrt(frac)))
        top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
        keep = torch.ones_like(x)
        keep[..., top:top + eh, left:left + ew] = 0
        return x * keep  # 0 in [-1, 1] is mid grey, as the battery's erase
    raise ValidationError(f"augmentation: choose from {', '.join(AUGMENTATIONS)}, got {name!r}")


# -- training -----------------------------------------------------------------------------------------
def _decoder_params(vae) -> list:
    return list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())


def _decoder_state(vae) -> dict:
    state = {f"decoder.{k}": v for k, v in vae.decoder.state_dict().items()}
    state.update({f"post_quant_conv.{k}": v for k, v in vae.post_quant_conv.state_dict().items()})
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _training_data(vae, n_images: int, seed: int, n_photos: int = 0):
    """Stage 1's images in [-1, 1] (shapes-world images, then ``n_photos`` calibration crops of
    ``cleanset``, none of the held-out photos :func:`measure` reads) and the shapes-world images'
    posterior means, unscaled (stage 2: what the decoder sees)."""
    import torch

    from ..mini import world
    from .cleanset import clean_images

    images, _ = world.make_dataset(n_images, seed=seed)
    x = to_tensor(images)
    with torch.no_grad():
        latents = torch.cat([vae.encode(x[i:i + 256]).latent_dist.mean for i in range(0, len(x), 256)])
    if n_photos:
        size = images.shape[1]
        photos = np.stack([im for _, im in clean_images(n_photos, seed=seed, size=size, kinds=("photo",))])
        x = torch.cat([x, to_tensor(photos)])
    return x, latents


def train(pipe, out: str | Path, cfg: SignatureConfig | None = None, progress: bool = True,
          callback: Callable[[int, int], None] | None = None, extractor_from: str | Path | None = None) -> Path:
    """Train the extractor (stage 1), then fine-tune a copy of ``pipe``'s decoder to ``cfg``'s key (stage 2); resumable.

    Writes ``out``/decoder.safetensors, extractor.safetensors and signature.json (config, key,
    and, after :func:`measure`, the figures it found). ``callback(step, total)`` runs after each
    step of either stage; when it raises (a Cancel), the step is checkpointed first.

    ``extractor_from``: a trained signature directory whose extractor stage 2 reads with; stage 1
    is skipped. As in the paper, one extractor serves many decoders: another key, or another
    model with the same latent space's images, costs stage 2 only (8 min here, not 35).
    """
    import torch
    from tqdm.auto import tqdm

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
        state = torch.load(ckpt, weights_only=True)
        if state["config"] != _checkpoint_key(cfg, source):
            raise ValidationError(f"out: {out} holds a checkpoint of another configuration; use a new directory")
        for name, module in modules.items():
            module.load_state_dict(state[name])
        start = state["step"]

    def save(step: int) -> None:
        with atomic_path(ckpt) as tmp:
            torch.save({"step": step, "config": _checkpoint_key(cfg, source),
                        **{name: module.state_dict() for name, module in modules.items()}}, tmp)

    images, latents = _training_data(base, cfg.n_images, cfg.seed, 0 if source else cfg.n_photos)  # photos: stage 1 only
    key = torch.from_numpy(cfg.key()).float().expand(cfg.batch, cfg.n_bits)
    bce = torch.nn.BCEWithLogitsLoss()
    last_save = time.monotonic()
    bar = tqdm(range(start, total), initial=start, total=total, desc="signature", disable=not progress)
    for step in bar:
        if step == max(start, cfg.extractor_steps):
            extractor.requires_grad_(False)  # stage 2 reads with the extractor stage 1 made
        stage = 1 if step < cfg.extractor_steps else 2
        rng = np.random.default_rng([cfg.seed, step])
        pick = torch.from_numpy(rng.integers(0, len(images) if stage == 1 else len(latents), cfg.batch))
        augmentation = cfg.augmentations[int(rng.integers(len(cfg.augmentations)))] if step >= min(cfg.clean_steps, cfg.extractor_steps) else "none"
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
        bar.set_postfix(stage=stage, bits=f"{bits_loss.item():.3f}", image=f"{image_loss.item():.5f}", aug=augmentation)
        if step % 50 == 0 or step == cfg.extractor_steps:  # and stage 2's first step, which a reused extractor starts at
            append_jsonl(out / "train_log.jsonl", {"stage": f"signature-{stage}", "step": step,
                                                   "loss": bits_loss.item(), "image_loss": image_loss.item(), "time": time.time()})
        if time.monotonic() - last_save > cfg.checkpoint_minutes * 60:
            save(step + 1)
            last_save = time.monotonic()
        report(callback, step + 1, total, save)
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


# -- the scheme ----------------------------------------------------------------------------------------
def binomial_p_value(matched: int, n_bits: int) -> float:
    """P(X >= matched) for X ~ Binomial(n_bits, 1/2)."""
    return float(sum(math.comb(n_bits, k) for k in range(matched, n_bits + 1)) / 2**n_bits)


@dataclass
class StableSignature:
    """A trained Stable Signature for one pipeline: :meth:`watermarked` pipeline, :meth:`detect`; also a battery scheme."""

    pipe: Any
    directory: str | Path = SHIPPED_SIGNATURE
    fpr: float = 0.01  # decide "detected" at this p-value (the clean false-positive rate is measured in signature.json)
    prompts: Sequence[str] = DEFAULT_PROMPTS
    name: str = "stable-signature"
    meta: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        from safetensors.torch import load_file

        self.directory = Path(self.directory)
        if not (self.directory / CONFIG).is_file():
            raise ModelNotFoundError(f"directory: no Stable Signature at {self.directory} (make one with `sdlab watermark signature train`)")
        if not 0 < self.fpr < 1:
            raise ValidationError(f"fpr: must be between 0 and 1, got {self.fpr}")
        self.meta = json.loads((self.directory / CONFIG).read_text(encoding="utf-8"))
        self.config = SignatureConfig(**self.meta["config"])
        self.key = np.asarray(self.meta["key"], dtype=np.uint8)
        self.marked_vae = copy.deepcopy(self.pipe.vae).eval()
        self.marked_vae.load_state_dict(load_file(str(self.directory / DECODER)), strict=False)
        self.extractor = build_extractor(self.config.n_bits, self.config.extractor_width).eval()
        self.extractor.load_state_dict(load_file(str(self.directory / EXTRACTOR)))
        self.image_size = int(self.pipe.vae.config.sample_size)
        self._marked_pipe = None

    def watermarked(self):
        """The pipeline with its decoder swapped for the marked one: every image it makes carries the key."""
        if self._marked_pipe is None:
            from diffusers import StableDiffusionPipeline

            from ..models import model_info
            from ..samplers import scheduler_config

            info = model_info(self.pipe)
            marked = StableDiffusionPipeline(**{**self.pipe.components, "vae": self.marked_vae})
            marked.set_progress_bar_config(disable=True)
            marked.sdlab_info = replace(info, name=f"{info.name}+stable-signature")
            marked._sdlab_scheduler_config = scheduler_config(self.pipe)  # the model's own, whatever sampler ran last
            self._marked_pipe = marked
        return self._marked_pipe

    def generate(self, seed: int, prompt: str | None = None, marked: bool = True) -> np.ndarray:
        """One RGB uint8 image at the model's defaults, from the marked or the original decoder."""
        from ..generate import generate
        from ..spec import GenerationSpec

        prompt = prompt if prompt is not None else self.prompts[seed % len(self.prompts)]
        result = generate(self.watermarked() if marked else self.pipe, GenerationSpec(prompt, seed=seed))
        return np.asarray(result.images[0])

    def bits(self, image: np.ndarray) -> np.ndarray:
        """The extractor's bits (0/1) for an RGB uint8 image of any size (resized to the model's)."""
        import torch
        from PIL import Image

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValidationError(f"image: expected an RGB array (height, width, 3), got shape {image.shape}")
        if image.shape[:2] != (self.image_size, self.image_size):
            image = np.asarray(Image.fromarray(image).resize((self.image_size, self.image_size), Image.BICUBIC))
        with torch.no_grad():
            return (self.extractor(to_tensor(image))[0] > 0).numpy().astype(np.uint8)

    def detect(self, image: np.ndarray) -> dict:
        """Bits matched, bit accuracy, p-value and whether p <= ``fpr``."""
        matched = int((self.bits(image) == self.key).sum())
        p = binomial_p_value(matched, len(self.key))
        return {"bits_matched": matched, "bits_total": len(self.key), "bit_accuracy": matched / len(self.key),
                "p_value": p, "detected": p <= self.fpr}

    # -- battery scheme --------------------------------------------------------------------------
    def pair(self, index: int, name: str, image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(clean, marked): the same seed and prompt through the original and the marked decoder."""
        return self.generate(index, marked=False), self.generate(index, marked=True)

    def score(self, image: np.ndarray) -> tuple[float, float]:
        found = self.detect(image)
        return found["bit_accuracy"], float(-np.log10(max(found["p_value"], 1e-300)))

    def signature(self) -> dict:
        return {"method": self.name, "directory": self.directory.name, "config": self.meta["config"],
                "prompts": list(self.prompts)}


def measure(scheme: StableSignature, n_images: int = 64, n_photos: int = 64, progress: bool = True) -> dict:
    """Figures for a trained signature: on ``n_images`` seeds, marked vs clean generations of the same
    latents (bit accuracy, true- and false-positive rates at ``scheme.fpr``, PSNR of the mark), and the
    false-positive rate on ``n_photos`` held-out photo crops (``cleanset.evaluation_photos``, which
    neither calibration nor the signature's training sees); written into ``signature.json`` as "measured"."""
    from tqdm.auto import tqdm

    from ..metrics import psnr
    from .cleanset import evaluation_photos

    rows = []
    for seed in tqdm(range(n_images), desc="measure", disable=not progress):
        clean, marked = scheme.pair(seed, str(seed))
        found, null = scheme.detect(marked), scheme.detect(clean)
        rows.append((found["bit_accuracy"], found["detected"], null["bit_accuracy"], null["detected"], psnr(clean, marked)))
    acc, tp, clean_acc, fp, db = (np.asarray(c, dtype=float) for c in zip(*rows))
    photos = [scheme.detect(photo) for _, photo in evaluation_photos(n_photos, size=256)]
    figures = {
        "n_images": n_images, "fpr_threshold": scheme.fpr,
        "bit_accuracy": round(float(acc.mean()), 4), "tpr": round(float(tp.mean()), 4),
        "clean_bit_accuracy": round(float(clean_acc.mean()), 4), "fpr": round(float(fp.mean()), 4),
        "n_photos": n_photos, "photo_bit_accuracy": round(float(np.mean([d["bit_accuracy"] for d in photos])), 4),
        "photo_fpr": round(float(np.mean([d["detected"] for d in photos])), 4),
        "psnr_db": round(float(db.mean()), 2), "psnr_db_min": round(float(db.min()), 2),
    }
    meta = {**scheme.meta, "measured": figures}
    atomic_write_text(Path(scheme.directory) / CONFIG, json.dumps(meta, indent=2) + "\n")
    scheme.meta = meta
    return figures
