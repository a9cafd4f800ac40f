"""What decides a Stable Signature (:class:`SignatureConfig`), and the files a trained one is made of."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ...validation import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, Check, Interval, validate_fields
from .augmentations import AUGMENTATIONS

SHIPPED_SIGNATURE = Path(__file__).resolve().parents[2] / "weights" / "shapes-world-signature"
CONFIG, DECODER, EXTRACTOR, CHECKPOINT = "signature.json", "decoder.safetensors", "extractor.safetensors", "signature.ckpt"

Dataset = Callable[[int, int], np.ndarray]
"""``dataset(n, seed)``: ``n`` of the model's own kind of images, RGB uint8 ``(n, height, width, 3)``, drawn from ``seed``."""

_WIDTH = Check(lambda w: isinstance(w, int) and not isinstance(w, bool) and w >= 8 and w % 8 == 0,
               "a whole number >= 8 and a multiple of 8 (the nets' groups of 8 channels)")
_AUGMENTATIONS = Check(lambda a: len(a) > 0 and set(a) <= set(AUGMENTATIONS),
                       "one or more of " + ", ".join(AUGMENTATIONS))


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
    embed_weight: float = 0.1  # stage 1: weight of the hidden residual's MSE (too high and the residual collapses to zero)
    faint_steps: int = 4000  # the last stage-1 steps, where the residual's weight is faint_embed_weight ...
    faint_embed_weight: float = 1.0  # ... so E learns to read a faint residual, as the decoder can only draw one
    image_weight: float = 100.0  # stage 2: weight of MSE(marked decoder, original decoder): how close to invisible
    n_images: int = 4000  # the model's images (``dataset``) for stage 1, whose latents stage 2 decodes
    n_photos: int = 1000  # stage 1 also hides messages in calibration photo crops, so on a photo E reads none in particular
    extractor_width: int = 32
    augmentations: tuple[str, ...] = AUGMENTATIONS
    checkpoint_minutes: float = 3.0

    _parameter_constraints = {
        "n_bits": [Interval(int, 8, None)], "key_seed": [NON_NEGATIVE_INT], "seed": [NON_NEGATIVE_INT],
        "extractor_steps": [NON_NEGATIVE_INT], "clean_steps": [NON_NEGATIVE_INT], "steps": [POSITIVE_INT],
        "batch": [POSITIVE_INT], "lr": [POSITIVE], "decoder_lr": [POSITIVE], "embed_weight": [NON_NEGATIVE],
        "faint_steps": [NON_NEGATIVE_INT], "faint_embed_weight": [NON_NEGATIVE], "image_weight": [NON_NEGATIVE],
        "n_images": [POSITIVE_INT], "n_photos": [NON_NEGATIVE_INT], "extractor_width": [_WIDTH],
        "augmentations": [_AUGMENTATIONS], "checkpoint_minutes": [NON_NEGATIVE],
    }

    def __post_init__(self) -> None:
        if not isinstance(self.augmentations, str):
            try:  # a JSON list from signature.json, or any other collection of names
                self.augmentations = tuple(self.augmentations)
            except TypeError:
                pass  # not a collection: validate_fields says so
        validate_fields(self)

    def key(self) -> np.ndarray:
        """The ``n_bits`` key bits (0/1), drawn from ``key_seed``."""
        return np.random.default_rng(self.key_seed).integers(0, 2, self.n_bits).astype(np.uint8)
