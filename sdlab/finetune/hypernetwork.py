"""Training an A1111 hypernetwork: only the small residual MLPs on the attention's key/value inputs learn.

As A1111's ``train_hypernetwork``: a new :class:`~sdlab.adapters.hypernetwork.Hypernetwork`
(layer structure 1-2-1, linear activation, N(0, 0.01) weights by default), the
model frozen, the hypernetwork applied at multiplier 1 while training. It is applied
to a copy of the UNet (:func:`~sdlab.adapters.hypernetwork.applied`), so nothing of the
user's pipeline changes even while training runs. A hypernetwork has no trigger word:
once loaded it steers every prompt, with a strength multiplier, which suits a style.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from ..adapters import hypernetwork as hn_lib
from ..progress import Callback
from ..validation import Check, Options
from .common import BASE_CONSTRAINTS, Dataset, EncodedSet, TrainConfig, autocast, check_family, check_size, noise_scheduler, snr_weights
from .common import train_loop
from .embedding import text_parts


@dataclass(frozen=True)
class HypernetworkTrainConfig(TrainConfig):
    """A hypernetwork run: A1111's structure options and the optimiser's."""

    steps: int = 600
    lr: float = 1e-3  # A1111's default is 5e-6 for SD; the small shapes world takes more
    layer_structure: tuple[float, ...] = (1, 2, 1)
    activation_func: str = "linear"
    sizes: tuple[int, ...] | None = None  # widths it acts on (None: the model's, as A1111 enables them)

    _parameter_constraints = {
        **BASE_CONSTRAINTS, "layer_structure": [Check(hn_lib._structure_ok, "multipliers starting and ending with 1, e.g. (1, 2, 1)")],
        "activation_func": [Options(hn_lib.ACTIVATIONS)],
        "sizes": [Check(lambda s: len(s) > 0 and all(isinstance(x, int) and x > 0 for x in s), "one or more widths"), None],
    }


def train_hypernetwork(pipe, data: Dataset, out: str | Path, name: str = "hypernetwork",
                       cfg: HypernetworkTrainConfig = HypernetworkTrainConfig(), callback: Callback | None = None,
                       progress: bool = False) -> hn_lib.Hypernetwork:
    """Train a hypernetwork for ``pipe`` on ``data``; resumable from ``out``. Its ``info`` holds the run's figures."""
    fam = check_family(pipe, "a hypernetwork")
    check_size(pipe, data.images)
    options = {"layer_structure": tuple(cfg.layer_structure), "activation_func": cfg.activation_func, "name": name}
    if cfg.sizes is not None:
        options["sizes"] = tuple(cfg.sizes)
    hn = hn_lib.new(pipe, seed=cfg.seed, **options)
    unet = copy.deepcopy(pipe.unet).requires_grad_(False)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    toks, encs = text_parts(pipe)
    sched, device = noise_scheduler(pipe), unet.device
    hn.to(device).train()
    weights = snr_weights(sched, cfg.min_snr_gamma)
    subject = EncodedSet(pipe, data, encs, toks, cfg.mask_weight, device, fam == "sdxl")
    params = list(hn.parameters())

    def loss(step: int, g: torch.Generator) -> torch.Tensor:
        with autocast(cfg, device):
            return subject.loss(unet, sched, weights, cfg.batch, g, caption_dropout=cfg.caption_dropout)

    with hn_lib.applied(unet, hn, 1.0):
        info = train_loop(out, cfg, params, loss, lambda: {"hn": hn.state_dict()}, lambda d: hn.load_state_dict(d["hn"]),
                          None, callback, progress, "hypernetwork")
    hn.eval().requires_grad_(False)
    hn.info.update(step=cfg.steps, **{f"run_{k}": v for k, v in info.items()})
    return hn
