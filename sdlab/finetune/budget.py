"""What a fine-tuning run will need, checked before its first step: memory and CPU time (:mod:`sdlab.cost`'s way).

A training step holds a copy of the model being trained, each trained weight's gradient and Adam's two moments,
and the forward pass's activations for the backward one. The activations grow with the items per step (the
subject's images, the class images, output preservation's items); the trained weights with a LoRA's rank. Either
can ask for more memory than the machine has (a rank of a million on the shapes world, a batch of a hundred
thousand). Such a run is refused in one line with the estimate, naming
whichever of the two asks for more, before any adapter or copy is made; ``force=True`` (CLI ``--force``) tries anyway.

Activations are counted as :func:`sdlab.cost.unet_cost` counts a generation's working set, times
:data:`TRAINING_ACTIVATIONS`; gradient checkpointing is not credited, so with it the estimate is high.
"""
from __future__ import annotations

import math

# bytes a training step keeps for backward per item / a generation's working set per item: the shapes world's LoRA
# (rank 4, one thread), peak RSS from batch 64 to 256, measured by benchmarks/bench_cost.py (which prints the ratio)
TRAINING_ACTIVATIONS = 23.0
ADAM_COPIES = 4  # a trained weight, its gradient and AdamW's two moments, all fp32


def lora_parameters(model, target_modules: list[str], rank: int) -> int:
    """How many weights peft's ``add_adapter(LoraConfig(r=rank, target_modules=...))`` would add to ``model``
    (``lora_A`` and ``lora_B`` of every matched linear layer and convolution), counted without adding them."""
    import torch
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    config, n = LoraConfig(r=rank, target_modules=target_modules), 0
    for name, module in model.named_modules():
        if not name or not check_target_module_exists(config, name):
            continue
        if isinstance(module, torch.nn.Linear):
            n += rank * (module.in_features + module.out_features)
        elif isinstance(module, torch.nn.Conv2d):
            n += rank * (module.in_channels // module.groups * math.prod(module.kernel_size) + module.out_channels)
    return n


def items_per_step(cfg, class_data=None, preserve_data=None) -> int:
    """Images through the trained model each step: the subject's, and the class images' and preservation
    items' where those losses are on."""
    n = cfg.batch
    if getattr(cfg, "prior_weight", 0) > 0 and class_data is not None:
        n += cfg.class_batch
    if getattr(cfg, "preserve_weight", 0) > 0 and preserve_data is not None:
        n += cfg.preserve_batch
    return n


def check_training(method: str, pipe, cfg, latent_hw: tuple[int, int], items: int, force: bool = False) -> dict:
    """Refuse a run whose estimated peak memory exceeds what the UNet's device has, or whose CPU time would not end
    today (:data:`sdlab.cost.TRAINING_LIMIT_S`). Returns the estimate (bytes and seconds) for the run's record."""
    from ..cost import TRAINING_LIMIT_S, check_budget, training_seconds, unet_cost
    from .lora import TARGETS

    unet = getattr(pipe, "unet", None)
    if unet is None:  # SD 3's transformer: every method refuses the family in its own words (common.check_family)
        return {}
    weights = sum(p.numel() * p.element_size() for p in unet.parameters())
    adapters = lora_parameters(unet, TARGETS[cfg.targets], cfg.rank) * 4 if method == "lora" else 0
    trained = weights if method == "dreambooth" else adapters
    config, (h, w) = dict(unet.config), latent_hw
    _, alive = unet_cost(config, h, w)
    device = str(unet.device)
    half = getattr(cfg, "mixed_precision", "no") in ("fp16", "bf16") and device.startswith("cuda")  # autocast is CUDA's here
    activations = TRAINING_ACTIVATIONS * alive * (2 if half else 4) * items
    memory = weights + ADAM_COPIES * trained + activations
    name, value = ("rank", cfg.rank) if ADAM_COPIES * adapters > activations else ("batch", cfg.batch)
    check_budget(name, value, memory_bytes=memory, device=device, force=force)
    seconds = training_seconds(config, h, w, items, cfg.steps) if device == "cpu" else None
    check_budget("steps", cfg.steps, seconds=seconds, device=device, force=force, limit_s=TRAINING_LIMIT_S)
    return {"estimated_peak_bytes": memory, "estimated_seconds": seconds}
