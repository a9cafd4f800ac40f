"""What decides a shapes-world training run: :class:`TrainConfig`, checked once when it is made."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..validation import NON_NEGATIVE, POSITIVE, POSITIVE_INT, SEED, UNIT, Interval, Options, validate_fields
from . import model as model_lib

TEXT_READS = ("end", "words")
NOISES = ("gaussian", "pyramid")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (with the seed, a run is reproducible).

    The defaults are the shipped model: ``sdlab mini train --out DIR`` with seed 0
    makes it (its figures are in README.md and the model's ``sdlab.json``).
    """

    seed: int = 0
    n_images: int = 40_000
    vae_steps: int = 2_400
    vae_batch: int = 16
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    vae_foreground_weight: float = 0.0  # 0: plain MSE; see stages.autoencoder.train_vae for why
    decoder_steps: int = 2_000
    decoder_batch: int = 16
    decoder_lr: float = 5e-4
    decoder_foreground_weight: float = 30.0  # shape pixels weigh 1 + this in the decoder fine-tune
    unet_steps: int = 11_000
    unet_batch: int = 64
    unet_lr: float = 5e-4
    unet_final_lr_fraction: float = 0.1  # cosine decay to this share of unet_lr
    warmup_steps: int = 200
    cfg_dropout: float = 0.1
    text_steps: int = 400  # attribute pretraining of the text encoder (then frozen)
    text_batch: int = 128
    text_lr: float = 1e-3
    text_reads: str = "words"  # where the attribute heads read: "words" or "end"; see stages.text
    text_end_weight: float = 1.0  # with text_reads="words": pull end-of-text states onto the empty prompt's
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0
    unet_foreground_weight: float = 12.0  # latent cells at and next to the shape weigh 1 + this (0: plain MSE)
    noise: str = "gaussian"  # or "pyramid"; see stages.unet.pyramid_noise
    pyramid_discount: float = 0.8
    checkpoint_minutes: float = 3.0
    model: model_lib.ModelConfig = field(default_factory=model_lib.ModelConfig)

    _parameter_constraints = {
        "seed": [SEED],
        **{name: [POSITIVE_INT] for name in ("n_images", "vae_steps", "vae_batch", "decoder_steps", "decoder_batch",
                                             "unet_steps", "unet_batch", "warmup_steps", "text_steps", "text_batch")},
        **{name: [POSITIVE] for name in ("vae_lr", "decoder_lr", "unet_lr", "text_lr")},
        **{name: [NON_NEGATIVE] for name in ("vae_foreground_weight", "decoder_foreground_weight", "unet_foreground_weight")},
        **{name: [NON_NEGATIVE] for name in ("vae_kl_weight", "text_end_weight", "checkpoint_minutes")},
        "cfg_dropout": [Interval(float, 0, 1, closed="left")],
        "ema_decay": [Interval(float, 0, 1, closed="left")],
        "unet_final_lr_fraction": [UNIT],
        "text_reads": [Options(TEXT_READS)],
        "noise": [Options(NOISES)],
    }

    def __post_init__(self) -> None:
        validate_fields(self)


def config_from_dict(saved: dict) -> TrainConfig:
    """The ``TrainConfig`` a run wrote (``train_config.json``, or ``sdlab.json``'s "training"); keys it does not know are ignored."""
    saved = dict(saved)
    model = model_lib.ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.pop("model").items()})
    known = set(TrainConfig.__dataclass_fields__)
    return TrainConfig(**{k: v for k, v in saved.items() if k in known}, model=model)
