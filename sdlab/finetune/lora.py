"""LoRA (Hu et al. 2021) on the UNet's attention, optionally the text encoder, through peft.

Exactly as diffusers' ``train_text_to_image_lora.py`` / ``train_dreambooth_lora.py`` do it:
``unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian",
target_modules=["to_k", "to_q", "to_v", "to_out.0"]))`` on a frozen model, the adapter's
weights the only trainable ones, saved with ``get_peft_model_state_dict`` in diffusers'
format. The adapter goes on *copies* of the UNet (and text encoder): the user's pipeline
never gets an adapter. With ``lora_B`` starting at zero the copy draws exactly what the
model drew until the first step moves it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from ..adapters.lora import save_lora
from ..progress import Callback
from ..validation import Interval, Options, invalid
from .common import PRIOR_CONSTRAINTS, Dataset, EncodedSet, PriorConfig, PriorSet, check_family, check_size, encode_text, noise_scheduler
from .common import rebuild, snr_weights, subject_and_prior_loss, train_loop
from .embedding import text_parts
from .preserve import preservation_set

UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
# "attention+conv": also the transformer blocks' projections and feed-forward and the ResNet convolutions
# (as LoCon / diffusers' advanced scripts): the UNet's drawing happens in its convolutions.
CONV_TARGETS = UNET_TARGETS + ["proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2"]
TARGETS = {"attention": UNET_TARGETS, "attention+conv": CONV_TARGETS}
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


@dataclass(frozen=True)
class LoraConfig(PriorConfig):
    """A LoRA run: the rank and alpha of every adapted layer, and whether the text encoder learns too."""

    steps: int = 600
    lr: float = 1e-3  # diffusers' LoRA scripts use 1e-4 for SD; the small shapes world takes more
    rank: int = 4  # r: the adapter's inner width
    alpha: float | None = None  # lora_alpha (None: = rank, scale 1)
    train_text_encoder: bool = False
    targets: str = "attention"  # or "attention+conv" (CONV_TARGETS)

    _parameter_constraints = {**PRIOR_CONSTRAINTS, "rank": [Interval(int, 1, None)], "targets": [Options(TARGETS)],
                              "alpha": [Interval(float, 0, None, closed="neither"), None], "train_text_encoder": [bool]}


@dataclass
class Lora:
    """The trained adapters (peft state dicts, no prefix) and what made them."""

    unet: dict[str, torch.Tensor]
    text_encoders: list[dict[str, torch.Tensor]]
    rank: int
    alpha: float
    family: str
    info: dict
    targets: str = "attention"

    def save(self, path: str | Path) -> Path:
        """diffusers' LoRA file (``pipe.load_lora_weights`` reads it); a directory or a ``.safetensors`` name."""
        te = self.text_encoders + [None, None]
        return Path(save_lora(path, self.unet, te[0], te[1], family=self.family, rank=self.rank, alpha=self.alpha))

    def apply(self, pipe, strength: float = 1.0):
        """A new pipeline with copies of ``pipe``'s UNet (and text encoders) carrying this adapter at ``strength``."""
        from peft import LoraConfig as PeftConfig

        parts = {"unet": _with_adapter(pipe.unet, self.unet, PeftConfig(r=self.rank, lora_alpha=self.alpha, target_modules=TARGETS[self.targets]))}
        _, encs = text_parts(pipe)
        for i, sd in enumerate(self.text_encoders):
            if sd:
                parts["text_encoder" if i == 0 else "text_encoder_2"] = _with_adapter(
                    encs[i], sd, PeftConfig(r=self.rank, lora_alpha=self.alpha, target_modules=TEXT_TARGETS))
        for model in parts.values():
            _scale(model, strength)
        return rebuild(pipe, **parts)


def add_adapter(model, config) -> None:
    """``model.add_adapter(config)`` for diffusers' UNet (as diffusers' scripts); for a transformers text
    encoder, peft's ``inject_adapter_in_model``, which is what its ``add_adapter`` runs (transformers 5's
    wrapper asks for peft >= 0.22, newer than the lock's)."""
    from diffusers import ModelMixin
    from peft import inject_adapter_in_model

    if isinstance(model, ModelMixin):
        model.add_adapter(config)
    else:
        inject_adapter_in_model(config, model)


def _with_adapter(model, state: dict, config):
    from peft import set_peft_model_state_dict

    model = copy.deepcopy(model).requires_grad_(False)
    add_adapter(model, config)
    set_peft_model_state_dict(model, {k: v.to(model.device) for k, v in state.items()})
    return model.requires_grad_(False).eval()


def _scale(model, strength: float) -> None:
    """Every LoRA layer's output times ``strength`` (peft's ``scale_layer``, what ``set_adapters`` weights do)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.scale_layer(strength)


def train_lora(pipe, data: Dataset, out: str | Path, cfg: LoraConfig = LoraConfig(), callback: Callback | None = None,
               progress: bool = False, class_data: Dataset | None = None, preserve_data: Dataset | None = None) -> Lora:
    """Train a LoRA on copies of ``pipe``'s UNet (and text encoders); resumable from ``out``. With
    ``cfg.prior_weight > 0``, ``class_data`` (the base model's images of the class: kohya's regularisation
    images) adds DreamBooth's prior-preservation loss; with ``cfg.preserve_weight > 0``, ``preserve_data``
    (:func:`.preserve.preservation_data`) adds output preservation, ``pipe.unet`` the teacher."""
    from peft import LoraConfig as PeftConfig
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    fam = check_family(pipe, "LoRA")
    check_size(pipe, data.images)
    use_prior = cfg.prior_weight > 0 and cfg.class_batch > 0
    if use_prior and class_data is None:
        raise invalid("class_data", None, "class images and prompts (dreambooth.class_images(pipe, prompts)) when prior_weight > 0")
    torch.manual_seed(cfg.seed)
    alpha = float(cfg.alpha or cfg.rank)
    unet = copy.deepcopy(pipe.unet).requires_grad_(False)
    unet.add_adapter(PeftConfig(r=cfg.rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=TARGETS[cfg.targets]))
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    toks, encs = text_parts(pipe)
    models = [unet]
    if cfg.train_text_encoder:
        encs = [copy.deepcopy(e).requires_grad_(False) for e in encs]
        for enc in encs:
            add_adapter(enc, PeftConfig(r=cfg.rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=TEXT_TARGETS))
        models += encs
    params = [p for m in models for p in m.parameters() if p.requires_grad]
    sched, device = noise_scheduler(pipe), unet.device
    weights = snr_weights(sched, cfg.min_snr_gamma)
    sdxl = fam == "sdxl"
    subject = EncodedSet(pipe, data, encs, toks, cfg.mask_weight, device, sdxl)
    prior = PriorSet(pipe, class_data, encs, toks, cfg.mask_weight, device, sdxl) if use_prior else None
    preserve = preservation_set(pipe, cfg, preserve_data, encs, toks, device, sdxl)
    # a text encoder being trained encodes each step's captions (the class images' too); frozen ones were encoded once
    encode = (lambda captions: encode_text(encs, toks, captions, sdxl)) if cfg.train_text_encoder else None  # noqa: E731
    unet.train()
    last: dict = {}
    loss = subject_and_prior_loss(cfg, unet, sched, weights, subject, prior, encode, last, preserve, pipe.unet)

    def state() -> dict:
        return {f"m{i}": get_peft_model_state_dict(m) for i, m in enumerate(models)}

    def load_state(saved: dict) -> None:
        for i, m in enumerate(models):
            set_peft_model_state_dict(m, saved[f"m{i}"])

    info = train_loop(out, cfg, params, loss, state, load_state, None, callback, progress, "lora")
    adapters = [{k: v.detach().float().cpu().clone() for k, v in get_peft_model_state_dict(m).items()} for m in models]
    info.update(method="lora", prior_weight=cfg.prior_weight if use_prior else 0.0, n_class=len(prior) if prior else 0,
                last_prior_loss=last.get("prior"),
                preserve_weight=cfg.preserve_weight if preserve else 0.0, n_preserve=len(preserve) if preserve else 0,
                last_preserve_loss=last.get("preserve"))
    return Lora(adapters[0], adapters[1:], cfg.rank, alpha, fam, info, cfg.targets)
