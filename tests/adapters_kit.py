"""Helpers for the adapter tests: LoRAs trained nowhere (peft layers with random weights) on tiny family pipelines.

A LoRA's B matrices start at zero (no effect); here they are drawn at random so that applying the
LoRA visibly changes the image, which is what lets the comparisons with plain diffusers fail.
"""
from __future__ import annotations

import copy

import torch

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
CONV_TARGETS = UNET_TARGETS + ["proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2", "time_emb_proj", "conv_shortcut"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]  # all of CLIPAttention, as kohya targets it


def allow_transformers_peft(monkeypatch) -> None:
    """Plain diffusers loads text-encoder LoRAs through transformers' ``load_adapter``, which asks for peft >= 0.22;
    the newest peft on the registry is 0.21.2, whose API that path uses unchanged. Let the oracle run."""
    import transformers.integrations.peft as integration

    monkeypatch.setattr(integration, "check_peft_version", lambda **_: None)


def _randomise(module, seed: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if "lora_B" in name or "lora_A" in name:
            p.data = torch.randn(p.shape, generator=g) * scale


def peft_state_dicts(pipe, rank: int = 4, alpha: float = 8.0, seed: int = 0, text: bool = True, targets=UNET_TARGETS) -> dict:
    """peft state dicts (``get_peft_model_state_dict``) of a random LoRA for ``pipe``'s denoiser and text encoders."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    out = {}
    name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    model = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets)), copy.deepcopy(getattr(pipe, name)))
    _randomise(model, seed, 0.3)
    out["unet"] = get_peft_model_state_dict(model)
    if text:
        for k, te in enumerate(("text_encoder", "text_encoder_2")):
            if getattr(pipe, te, None) is not None:
                enc = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=TE_TARGETS), copy.deepcopy(getattr(pipe, te)))
                _randomise(enc, seed + 1 + k, 0.3)
                out[te] = get_peft_model_state_dict(enc)
    return out


def make_lora(pipe, fam: str, path, **kwargs):
    """A random LoRA for ``pipe`` saved with :func:`sdlab.adapters.lora.save_lora`; returns the file."""
    from sdlab.adapters.lora import save_lora

    rank, alpha = kwargs.pop("rank", 4), kwargs.pop("alpha", 8.0)
    sds = peft_state_dicts(pipe, rank=rank, alpha=alpha, seed=kwargs.pop("seed", 0), text=kwargs.pop("text", True),
                           targets=kwargs.pop("targets", UNET_TARGETS))
    return save_lora(path, sds["unet"], sds.get("text_encoder"), sds.get("text_encoder_2"), family=fam, rank=rank, alpha=alpha, **kwargs)


def embedding_vectors(pipe, n: int = 2, seed: int = 0):
    """Random vectors of the token embeddings' scale, one set per CLIP text encoder (SDXL: clip_l and clip_g)."""
    g = torch.Generator().manual_seed(seed)

    def draw(encoder):
        table = encoder.get_input_embeddings().weight
        return torch.randn(n, table.shape[1], generator=g) * float(table.std())

    if getattr(pipe, "text_encoder_2", None) is not None:
        return {"clip_l": draw(pipe.text_encoder), "clip_g": draw(pipe.text_encoder_2)}
    return draw(pipe.text_encoder)
