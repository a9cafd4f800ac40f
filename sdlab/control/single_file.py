"""ControlNets kept as one file, as A1111's ControlNet extension and ComfyUI keep them.

Users' ControlNets mostly live as single files in a folder (A1111: ``models/ControlNet``), in one of
two layouts:

- the original ControlNet layout (lllyasviel's ``control_v11p_sd15_canny.pth``/``.safetensors``:
  ``input_blocks``, ``zero_convs``, ``input_hint_block``, ``middle_block_out``, optionally under
  ``control_model.``), converted here by diffusers' own ``convert_controlnet_checkpoint``;
- diffusers' keys in one file (``diffusers_xl_canny_full.safetensors`` and the like, or a diffusers
  directory's ``diffusion_pytorch_model.safetensors`` copied out), read as is.

Neither carries a config. A ControlNet mirrors the encoder of the UNet it steers, so the config is
that UNet's (diffusers' ``ControlNetModel.from_unet``), with what the file itself fixes read from
its tensors: the condition embedding's channels and each block's transformer depth (SDXL's "mid"
and "small" ControlNets are shallower than their UNet). A file that still does not fit (another
family, an SDXL file in the original layout, which diffusers' converter does not map) is refused in
one line naming what is missing. A pickle (``.pth``, ``.ckpt``) is read only with ``allow_pickle``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ValidationError
from ..validation import invalid

SUFFIXES = (".safetensors", ".pth", ".ckpt", ".pt", ".bin")
LDM_KEYS = ("input_hint_block.0.weight", "control_model.input_hint_block.0.weight")  # the original layout's condition input
DIFFUSERS_KEY = "controlnet_cond_embedding.conv_in.weight"


def is_file(model) -> bool:
    """Whether ``model`` names a ControlNet file (by its suffix)."""
    return isinstance(model, (str, os.PathLike)) and Path(model).suffix.lower() in SUFFIXES


def layout(state: dict) -> str:
    """``ldm`` (the original ControlNet layout), ``diffusers``, or a one-line refusal naming what the file is not."""
    if any(k in state for k in LDM_KEYS):
        return "ldm"
    if DIFFUSERS_KEY in state:
        return "diffusers"
    hint = next(iter(state), "nothing")
    raise ValidationError(f"control model: the file is not a ControlNet (neither input_hint_block nor {DIFFUSERS_KEY} "
                          f"among its {len(state)} tensors; the first is {hint!r}): ControlNet files in the original or diffusers layout")


def _embedding_channels(state: dict) -> list[int]:
    """The condition embedding's widths: conv_in's, then each stride-2 block's (diffusers' ``blocks`` 1, 3, 5, ...)."""
    widths = [int(state[DIFFUSERS_KEY].shape[0])]
    i = 1
    while f"controlnet_cond_embedding.blocks.{i}.weight" in state:
        widths.append(int(state[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0]))
        i += 2
    return widths


def _transformer_depths(state: dict, n_blocks: int) -> list[int]:
    """Transformer layers of each down block's first attention in the file (0 where the block has none)."""
    depths = []
    for b in range(n_blocks):
        found = {int(m.group(1)) for k in state for m in [re.match(rf"down_blocks\.{b}\.attentions\.0\.transformer_blocks\.(\d+)\.", k)] if m}
        depths.append(max(found) + 1 if found else 0)
    return depths


def to_controlnet(state: dict, unet, name: str = "control model"):
    """A diffusers ``ControlNetModel`` for ``unet`` holding a single file's tensors (see the module's docstring)."""
    import torch
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    if getattr(unet, "config", None) is None or "layers_per_block" not in unet.config:
        raise invalid(f"{name}: pipeline", type(unet).__name__, "a UNet pipeline (SD 1.x, 2.x, SDXL): SD 3 ControlNets come as diffusers directories")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if layout(state) == "ldm":
        state = convert_controlnet_checkpoint(state, {"layers_per_block": unet.config.layers_per_block})
        state = {k: v for k, v in state.items() if v is not None}
    with torch.device("meta"):
        probe = ControlNetModel.from_unet(unet, load_weights_from_unet=False, conditioning_embedding_out_channels=tuple(_embedding_channels(state)),
                                          conditioning_channels=int(state[DIFFUSERS_KEY].shape[1]))
    config = dict(probe.config)
    depths = _transformer_depths(state, len(config["down_block_types"]))
    ours = config["transformer_layers_per_block"]
    ours = [ours] * len(depths) if isinstance(ours, int) else list(ours)
    if any(d and d != o for d, o in zip(depths, ours)):
        config["transformer_layers_per_block"] = [d or o for d, o in zip(depths, ours)]
    net = ControlNetModel.from_config(config)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        what = (f"{len(missing)} weights this pipeline's ControlNet needs are missing (e.g. {missing[0]})" if missing else
                f"{len(wrong)} weights have other shapes (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)}, "
                f"this pipeline needs {tuple(expected[wrong[0]].shape)})" if wrong else
                f"{len(unexpected)} weights have no place in it (e.g. {unexpected[0]})")
        raise ValidationError(f"{name}: the file does not fit this pipeline's UNet ({type(unet).__name__}, cross-attention "
                              f"{unet.config.cross_attention_dim}): {what}; a ControlNet of this pipeline's family is needed")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return net
