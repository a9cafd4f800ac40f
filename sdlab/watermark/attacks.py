"""Image attacks with one strength knob each (RGB uint8 in, RGB uint8 out).

Each attack has an identity strength (quality 100 is not one: JPEG always
re-encodes) and three default strengths, mild to strong, chosen to bracket
what WAVES and REFERENCE.md measure. Random attacks (erasing, noise) draw
from ``seed``, so the clean and the marked copy of an image get the same
erasure or noise and only the watermark differs.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageEnhance

from ..errors import ValidationError
from ..images import from_tensor, to_tensor
from ..validation import Interval, Options, invalid, validate_params

AttackFn = Callable[[np.ndarray, float, np.random.Generator, dict], np.ndarray]


@dataclass(frozen=True)
class Attack:
    """One attack: its function, what its strength means, and its default strengths."""

    name: str
    fn: AttackFn
    unit: str
    strengths: tuple[float, ...]
    identity: float | None = None
    low: float = -np.inf
    high: float = np.inf
    needs: str | None = None  # "vae" or "pipe": a model passed in by the caller


def encode(image: np.ndarray, fmt: str, quality: float) -> bytes:
    """Encode an RGB array with Pillow (JPEG or WebP) at ``quality``."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, quality=int(round(quality)))
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _pil(fn: Callable[[Image.Image, float], Image.Image]) -> AttackFn:
    return lambda img, s, rng, ctx: np.asarray(fn(Image.fromarray(img), s).convert("RGB"))


def jpeg(img: np.ndarray, quality: float, rng=None, ctx=None) -> np.ndarray:
    return _decode(encode(img, "JPEG", quality))


def webp(img: np.ndarray, quality: float, rng=None, ctx=None) -> np.ndarray:
    return _decode(encode(img, "WEBP", quality))


def resize(img: np.ndarray, scale: float, rng=None, ctx=None) -> np.ndarray:
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    return np.asarray(small.resize((w, h), Image.BILINEAR))


def rotate(img: np.ndarray, degrees: float, rng=None, ctx=None) -> np.ndarray:
    return np.asarray(Image.fromarray(img).rotate(degrees, resample=Image.BILINEAR, fillcolor=(0, 0, 0)))


def crop(img: np.ndarray, keep: float, rng=None, ctx=None) -> np.ndarray:
    """Centre crop keeping ``keep`` of each side (not resized back: the image gets smaller)."""
    h, w = img.shape[:2]
    ch, cw = max(1, round(h * keep)), max(1, round(w * keep))
    top, left = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[top : top + ch, left : left + cw])


def erase(img: np.ndarray, fraction: float, rng: np.random.Generator, ctx=None) -> np.ndarray:
    """Grey out one random rectangle covering ``fraction`` of the area."""
    h, w = img.shape[:2]
    aspect = rng.uniform(0.5, 2.0)
    eh = min(h, max(1, round(np.sqrt(fraction * h * w / aspect))))
    ew = min(w, max(1, round(fraction * h * w / eh)))
    top, left = rng.integers(0, h - eh + 1), rng.integers(0, w - ew + 1)
    out = img.copy()
    out[top : top + eh, left : left + ew] = 128
    return out


def blur(img: np.ndarray, sigma: float, rng=None, ctx=None) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return np.clip(gaussian_filter(img.astype(np.float32), sigma=(sigma, sigma, 0)), 0, 255).round().astype(np.uint8)


def noise(img: np.ndarray, sigma: float, rng: np.random.Generator, ctx=None) -> np.ndarray:
    """Additive Gaussian noise, ``sigma`` in 0-255 units."""
    return np.clip(img + rng.normal(scale=sigma, size=img.shape), 0, 255).round().astype(np.uint8)


def combo_geo(img, level, rng, ctx):
    """Rotation (level degrees) then a centre crop keeping 1 - 0.05 x level, as WAVES' geometric combination."""
    return crop(rotate(img, level), 1 - 0.05 * level)


def combo_photo(img, level, rng, ctx):
    """Brightness and contrast both x (1 + 0.1 x level)."""
    image = Image.fromarray(img)
    image = ImageEnhance.Brightness(image).enhance(1 + 0.1 * level)
    return np.asarray(ImageEnhance.Contrast(image).enhance(1 + 0.1 * level))


def combo_degrade(img, level, rng, ctx):
    """Blur (sigma 0.3 x level), noise (sigma 2 x level), then JPEG at quality 100 - 10 x level."""
    return jpeg(noise(blur(img, 0.3 * level), 2 * level, rng), 100 - 10 * level)


def vae_roundtrip(img: np.ndarray, rounds: float, rng, ctx: dict) -> np.ndarray:
    """Encode and decode through a diffusers ``AutoencoderKL`` ``rounds`` times (posterior mean)."""
    import torch

    vae = ctx["vae"]
    h, w = img.shape[:2]
    h8, w8 = h // 8 * 8, w // 8 * 8
    x = to_tensor(img[:h8, :w8])
    with torch.no_grad():
        for _ in range(int(rounds)):
            x = vae.decode(vae.encode(x.to(vae.dtype)).latent_dist.mean).sample.float().clamp(-1, 1)
    out = img.copy()
    out[:h8, :w8] = from_tensor(x)[0]
    return out


def img2img(img: np.ndarray, strength: float, rng: np.random.Generator, ctx: dict) -> np.ndarray:
    """An img2img pass (empty prompt) at ``strength`` through a diffusers ``StableDiffusionPipeline``."""
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline(**ctx["pipe"].components)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(int(rng.integers(2**31)))
    h, w = img.shape[:2]
    out = pipe(prompt="", image=Image.fromarray(img[: h // 8 * 8, : w // 8 * 8]), strength=strength,
               num_inference_steps=ctx.get("steps", 20), guidance_scale=1.0, generator=generator).images[0]
    return np.asarray(out.resize((w, h), Image.BICUBIC).convert("RGB"))


ATTACKS: dict[str, Attack] = {a.name: a for a in (
    Attack("none", lambda img, s, rng, ctx: img.copy(), "-", (0.0,), identity=0.0),
    Attack("jpeg", jpeg, "quality", (90, 70, 50), low=1, high=100),
    Attack("webp", webp, "quality", (90, 70, 50), low=1, high=100),
    Attack("resize", resize, "scale", (0.75, 0.5, 0.3), identity=1.0, low=0.01, high=1.0),
    Attack("rotate", rotate, "degrees", (2, 5, 10), identity=0.0),
    Attack("crop", crop, "fraction kept", (0.9, 0.75, 0.5), identity=1.0, low=0.01, high=1.0),
    Attack("erase", erase, "fraction erased", (0.05, 0.15, 0.3), identity=0.0, low=0.0, high=1.0),
    Attack("brightness", _pil(lambda im, s: ImageEnhance.Brightness(im).enhance(s)), "factor", (1.1, 1.3, 1.6), identity=1.0, low=0.0),
    Attack("contrast", _pil(lambda im, s: ImageEnhance.Contrast(im).enhance(s)), "factor", (1.1, 1.3, 1.6), identity=1.0, low=0.0),
    Attack("blur", blur, "sigma", (0.5, 1.0, 2.0), identity=0.0, low=0.0),
    Attack("noise", noise, "sigma (0-255)", (2, 5, 10), identity=0.0, low=0.0),
    Attack("combo_geo", combo_geo, "level", (1, 2, 4), identity=0.0, low=0.0, high=19.0),
    Attack("combo_photo", combo_photo, "level", (1, 2, 4), identity=0.0, low=0.0),
    Attack("combo_degrade", combo_degrade, "level", (1, 2, 4), identity=0.0, low=0.0, high=9.0),
    Attack("vae", vae_roundtrip, "round trips", (1, 2, 3), identity=0.0, low=0.0, needs="vae"),
    Attack("img2img", img2img, "strength", (0.1, 0.3, 0.5), identity=0.0, low=0.0, high=1.0, needs="pipe"),
)}
DEFAULT_ATTACKS = tuple(name for name, a in ATTACKS.items() if a.needs is None and name != "none")


def check_attack(name: str, strength: float | None = None, context: dict | None = None) -> Attack:
    """The :class:`Attack` called ``name``, after checking the strength and any model it needs."""
    validate_params({"attacks": name}, {"attacks": [Options(ATTACKS)]})
    attack = ATTACKS[name]
    if strength is not None:
        bounds = Interval(float, None if np.isinf(attack.low) else attack.low, None if np.isinf(attack.high) else attack.high)
        if not bounds.accepts(strength):
            raise invalid("strength", strength, f"{bounds.describe()} ({name}'s {attack.unit})")
    if attack.needs and not (context or {}).get(attack.needs):
        what = "a diffusers AutoencoderKL (vae=...)" if attack.needs == "vae" else "a StableDiffusionPipeline (pipe=...)"
        raise ValidationError(f"attacks: {name} needs {what}")
    return attack


def apply(image: np.ndarray, name: str, strength: float, seed: int = 0, **models: Any) -> np.ndarray:
    """Attack an RGB uint8 image; ``models`` carries ``vae=`` or ``pipe=`` for the regeneration attacks."""
    attack = check_attack(name, strength, models)
    if attack.identity is not None and strength == attack.identity:
        return image.copy()
    return attack.fn(image, strength, np.random.default_rng(seed), models)


def chain(image: np.ndarray, steps: list[tuple[str, float]], seed: int = 0, **models: Any) -> np.ndarray:
    """Apply several attacks in order: ``[("jpeg", 80), ("rotate", 3)]``."""
    for i, (name, strength) in enumerate(steps):
        image = apply(image, name, strength, seed=seed + i, **models)
    return image
