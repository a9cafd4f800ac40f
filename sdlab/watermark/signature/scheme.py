"""A trained Stable Signature in use: the marked pipeline, detection by a binomial test, a battery scheme, its figures."""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import ModelNotFoundError
from ...images import to_tensor
from ...io import atomic_write_text
from ...progress import Callback, Reporter
from ...validation import NON_NEGATIVE_INT, POSITIVE_INT, Interval, invalid, validate_fields, validate_params
from ..treering import DEFAULT_PROMPTS
from .config import CONFIG, DECODER, EXTRACTOR, SHIPPED_SIGNATURE, SignatureConfig
from .nets import build_extractor

MEASURE_CONSTRAINTS = {"n_images": [POSITIVE_INT], "n_photos": [NON_NEGATIVE_INT]}


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

    _parameter_constraints = {"fpr": [Interval(float, 0, 1, closed="neither")]}

    def __post_init__(self) -> None:
        from safetensors.torch import load_file

        self.directory = Path(self.directory)
        if not (self.directory / CONFIG).is_file():
            raise ModelNotFoundError(f"directory: no Stable Signature at {self.directory} (make one with `sdlab watermark signature train`)")
        validate_fields(self)
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
        """A pipeline sharing ``pipe``'s parts but drawing with the marked decoder: every image it makes carries the key."""
        if self._marked_pipe is None:
            from diffusers import StableDiffusionPipeline

            from ...models import model_info, register

            info = model_info(self.pipe)
            marked = StableDiffusionPipeline(**{**self.pipe.components, "vae": self.marked_vae})
            marked.set_progress_bar_config(disable=True)
            register(marked, replace(info, name=f"{info.name}+stable-signature"))
            self._marked_pipe = marked
        return self._marked_pipe

    def generate(self, seed: int, prompt: str | None = None, marked: bool = True) -> np.ndarray:
        """One RGB uint8 image at the model's defaults, from the marked or the original decoder."""
        from ...generate import generate
        from ...spec import GenerationSpec

        prompt = prompt if prompt is not None else self.prompts[seed % len(self.prompts)]
        result = generate(self.watermarked() if marked else self.pipe, GenerationSpec(prompt, seed=seed))
        return np.asarray(result.images[0])

    def bits(self, image: np.ndarray) -> np.ndarray:
        """The extractor's bits (0/1) for an RGB uint8 image of any size (resized to the model's)."""
        import torch
        from PIL import Image

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise invalid("image", f"an array of shape {image.shape}", "an RGB array (height, width, 3)")
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


def measure(scheme: StableSignature, n_images: int = 64, n_photos: int = 64, progress: bool = True,
            callback: Callback | None = None) -> dict:
    """Figures for a trained signature: on ``n_images`` seeds, marked vs clean generations of the same
    latents (bit accuracy, true- and false-positive rates at ``scheme.fpr``, PSNR of the mark), and the
    false-positive rate on ``n_photos`` held-out photo crops (``cleanset.evaluation_photos``, which
    neither calibration nor the signature's training sees); written into ``signature.json`` as "measured".
    ``callback(done, n_images)`` follows the generated pairs."""
    from ...metrics import psnr
    from ..cleanset import evaluation_photos

    validate_params({"n_images": n_images, "n_photos": n_photos}, MEASURE_CONSTRAINTS)
    rows = []
    with Reporter(callback, progress, desc="measure") as reporter:
        for seed in range(n_images):
            clean, marked = scheme.pair(seed, str(seed))
            found, null = scheme.detect(marked), scheme.detect(clean)
            rows.append((found["bit_accuracy"], found["detected"], null["bit_accuracy"], null["detected"], psnr(clean, marked)))
            reporter(seed + 1, n_images)
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
