"""What :func:`sdlab.generate.generate` adds to a call when a spec carries control units.

1. check that the family can take them (one line naming the family otherwise);
2. load each unit's ControlNet (or take the loaded one), on the UNet's device and dtype;
3. draw each unit's condition map (:mod:`sdlab.control.preprocess`) and fit it to the image size
   as A1111's resize modes do;
4. the pipeline's arguments: the maps (``image`` for text-to-image, ``control_image`` for img2img and
   inpainting), ``controlnet_conditioning_scale``, ``control_guidance_start/end``, ``guess_mode`` (and, for a
   unit whose prompt is more important, a view of its ControlNet that ramps its residuals: :func:`prompt_first`);
   for depth2img models (``sd2-depth``) the depth map (``depth_map``), no ControlNet.

diffusers' ControlNet pipelines then run the ControlNet beside the UNet and hand its residuals
to the UNet call (``down_block_additional_residuals``, ``mid_block_additional_residual``); sdlab's
:class:`~sdlab.denoiser.Denoiser` passes every keyword through, so hooks and traces see the controlled
prediction.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..errors import ValidationError
from ..images import load_rgb
from ..models import family
from ..validation import invalid
from .preprocess import preprocess

CONTROL_FAMILIES = ("sd1", "sd2", "sd-inpaint", "sdxl", "sd3")  # ControlNet pipelines diffusers has for them
DEPTH_FAMILY = "sd2-depth"


@dataclass
class ControlCall:
    """A call's ControlNet (one model, a list, or None for depth2img), its keyword arguments and the maps drawn."""

    controlnet: object = None
    kwargs: dict = field(default_factory=dict)
    maps: list = field(default_factory=list)
    units: tuple = ()  # the units with their model hashes filled in
    seeds_global_rng: bool = False  # SD 3's pipeline samples the map's latent with no generator

    def rng(self, seed: int, device):
        """Around the pipeline call: SD 3's ControlNet pipeline draws the control map's VAE latent from torch's
        global generator, so sdlab seeds it with the spec's seed inside ``fork_rng`` (images reproduce, and the
        caller's global random state is left as it was); a no-op for every other pipeline."""
        import contextlib

        import torch

        if not self.seeds_global_rng:
            return contextlib.nullcontext()
        device = torch.device(device)
        stack = contextlib.ExitStack()
        stack.enter_context(torch.random.fork_rng(devices=[device] if device.type == "cuda" else []))
        torch.manual_seed(seed)
        return stack


def resize_map(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map (H, W, 3 uint8) at ``size`` (width, height) as the extension's ``high_quality_resize`` resizes one:
    nearest for maps of a few flat colours (segmentations), area when shrinking, cubic when growing; a black-and-white
    map stays black and white (re-thresholded with Otsu's cut). Its thinning of one-pixel edges is not done here."""
    if (array.shape[1], array.shape[0]) == size:
        return array
    colours = len(np.unique(array.reshape(-1, array.shape[2]), axis=0))
    binary = colours == 2 and array.min() < 16 and array.max() > 240
    smaller = size[0] * size[1] < array.shape[0] * array.shape[1]
    method = Image.NEAREST if 2 < colours < 200 else Image.BOX if smaller else Image.BICUBIC
    out = np.asarray(Image.fromarray(array).resize(size, method))
    if binary:
        from skimage.filters import threshold_otsu

        gray = out.astype(np.float32).mean(axis=2).clip(0, 255).astype(np.uint8)
        cut = threshold_otsu(gray) if gray.min() < gray.max() else 127
        out = np.repeat(np.where(gray > cut, 255, 0).astype(np.uint8)[..., None], 3, axis=2)
    return out


def fit(image: Image.Image, size: tuple[int, int], mode: str = "Crop and Resize") -> Image.Image:
    """``image`` at ``size`` (width, height) as A1111's resize modes fit a map: stretch (Just Resize), scale to
    cover and centre-crop (Crop and Resize), or scale to fit inside on a ground of the map's median border colour
    (Resize and Fill)."""
    array = np.asarray(image.convert("RGB"))
    w, h = size
    if (array.shape[1], array.shape[0]) == size:
        return image.convert("RGB")
    if mode == "Just Resize":
        return Image.fromarray(resize_map(array, size))
    old_h, old_w = array.shape[:2]
    k = (max if mode == "Crop and Resize" else min)(h / old_h, w / old_w)
    scaled = resize_map(array, (int(round(old_w * k)), int(round(old_h * k))))
    new_h, new_w = scaled.shape[:2]
    if mode == "Crop and Resize":
        top, left = max(0, (new_h - h) // 2), max(0, (new_w - w) // 2)
        return Image.fromarray(np.ascontiguousarray(scaled[top : top + h, left : left + w]))
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    canvas = np.tile(np.median(border, axis=0).astype(np.uint8)[None, None], (h, w, 1))
    top, left = max(0, (h - new_h) // 2), max(0, (w - new_w) // 2)
    canvas[top : top + new_h, left : left + new_w] = scaled
    return Image.fromarray(canvas)


def condition_map(unit, size: tuple[int, int], index: int = 0) -> Image.Image:
    """The unit's map at the image size: preprocessed from its image (unless ready), then fitted."""
    if unit.image is None:
        raise invalid(f"control image of unit {index}", None, "a path, PIL image or array (a spec read from a PNG "
                      "holds only the image's hash: pass the image again, e.g. sdlab reproduce --control IMG)")
    drawn = preprocess(unit.image, unit.control_type, module=unit.module, low=unit.low, high=unit.high,
                       preprocessed=unit.preprocessed)
    return fit(drawn, size, unit.resize_mode)


def check_family(pipe, spec, run_mode: str) -> str:
    """The pipe's family, if it can run ``spec``'s control in ``run_mode``; otherwise one line naming what can."""
    name = family(pipe)
    if name == DEPTH_FAMILY:
        if spec.mode != "img2img":
            raise invalid("mode", spec.mode, f"img2img for {name} (depth2img starts from an init image; pass one)")
        if len(spec.control) != 1 or spec.control[0].control_type != "depth" or spec.control[0].model is not None:
            raise invalid("control", [u.control_type for u in spec.control],
                          f"for {name}: exactly one depth map without a ControlNet model (the UNet reads it itself)")
        return name
    if name not in CONTROL_FAMILIES:
        raise invalid("control", f"a {name} model", "ControlNets on " + ", ".join(CONTROL_FAMILIES))
    prompt_first = any(u.prompt_more_important for u in spec.control)
    if name == "sd3" and (run_mode != "txt2img" or spec.guess_mode or prompt_first):
        mode = " with guess mode" if spec.guess_mode else " with 'My prompt is more important'" if prompt_first else ""
        raise invalid("control", f"{spec.mode}{mode} on sd3",
                      "SD 3 ControlNets in text-to-image, Control Mode Balanced (diffusers' SD 3 ControlNet pipeline)")
    if spec.guess_mode and prompt_first:
        raise invalid("control mode", "guess mode with a unit whose prompt is more important",
                      "one Control Mode: 'ControlNet is more important' (guess_mode, every unit) or 'My prompt is more important'")
    missing = [i for i, u in enumerate(spec.control) if u.model is None]
    if missing:
        raise invalid(f"control model of unit {missing[0]}", None, "a registered ControlNet name, a ControlNet directory or a loaded model")
    return name


def _load(unit, pipe):
    if not isinstance(unit.model, str):
        return unit.model
    from .nets import load_controlnet

    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    return load_controlnet(unit.model, device=denoiser.device, dtype=denoiser.dtype, unet=getattr(pipe, "unet", None), allow_pickle=unit.allow_pickle)


def _check_fits(net, pipe, name: str, index: int) -> None:
    """A ControlNet made for another family fails deep in the UNet; say so in one line instead."""
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    for key in ("cross_attention_dim", "joint_attention_dim", "block_out_channels", "addition_embed_type"):
        ours, theirs = denoiser.config.get(key), net.config.get(key)
        if ours is not None and theirs is not None and (list(ours) if isinstance(ours, (list, tuple)) else ours) != (
                list(theirs) if isinstance(theirs, (list, tuple)) else theirs):
            raise ValidationError(f"control model of unit {index}: {theirs!r} is not valid for this {name} model's {key} "
                                  f"{ours!r}; valid: a ControlNet made for this model's family")


def _check_map_scale(net, pipe, index: int) -> None:
    """A ControlNet's map encoder shrinks the map by 2 per step after the first; it must land on the latent size."""
    channels = net.config.get("conditioning_embedding_out_channels")
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    if channels is not None and 2 ** (len(channels) - 1) != factor:
        raise ValidationError(f"control model of unit {index}: a map encoder downsampling by {2 ** (len(channels) - 1)} is not valid "
                              f"for this model's VAE (it downsamples by {factor}); valid: a ControlNet made for this model")


def prompt_first(net):
    """A view of ``net`` (the same modules and weights; ``net`` itself untouched) whose forward always ramps
    its residuals as diffusers' guess mode does, 10^-1 at the first down block up to 1 at the middle block,
    while the pipeline still runs it on both halves of CFG: A1111's "My prompt is more important" (its
    extension ramps by 0.825^(12-i), equal to diffusers' 10^(-(12-i)/12) within 0.6 % on SD 1.x/2.x)."""
    import copy

    view = copy.copy(net)  # a new instance dict over the same submodules and parameters
    forward = type(net).forward

    def ramped(*args, **kwargs):
        kwargs["guess_mode"] = True
        return forward(view, *args, **kwargs)

    object.__setattr__(view, "forward", ramped)
    return view


def depth_tensor(image, size: tuple[int, int]):
    """A user's depth map (white = near, as MiDaS/DPT) as the (1, H, W) float tensor depth2img takes."""
    import torch

    gray = load_rgb(image).astype(np.float32).mean(axis=2)
    if float(gray.max() - gray.min()) < 1.0:
        raise invalid("depth map", "a flat image", "a depth map with at least two depths (depth2img normalises min..max)")
    gray = np.asarray(fit(Image.fromarray(gray.round().astype(np.uint8)).convert("RGB"), size, "Just Resize"), np.float32)[..., 0]
    return torch.from_numpy(gray / 255.0)[None]


def control_call(pipe, spec, run_mode: str) -> ControlCall:
    """Everything a controlled call adds (see the module docstring). ``spec`` is resolved (width, height set)."""
    name = check_family(pipe, spec, run_mode)
    size = (spec.width, spec.height)
    if name == DEPTH_FAMILY:
        unit = spec.control[0]
        drawn = condition_map(unit, size)
        return ControlCall(None, {"depth_map": depth_tensor(drawn, size)}, [drawn], spec.control)
    from .nets import name_and_hash

    maps = [condition_map(unit, size, i) for i, unit in enumerate(spec.control)]  # every image checked before any load
    nets, units = [], []
    for i, unit in enumerate(spec.control):
        net = _load(unit, pipe)
        _check_fits(net, pipe, name, i)
        _check_map_scale(net, pipe, i)
        nets.append(prompt_first(net) if unit.prompt_more_important else net)
        resolution = min(load_rgb(unit.image).shape[:2]) if unit.module == "canny" else -1
        units.append(unit.replace(model_hash=name_and_hash(net)[1], processor_res=resolution))
    one = len(nets) == 1
    scales, starts, ends = ([getattr(u, k) for u in units] for k in ("scale", "start", "end"))
    kwargs = {
        "image" if run_mode == "txt2img" and name != "sd3" else "control_image": maps[0] if one else maps,
        "controlnet_conditioning_scale": float(scales[0]) if one else [float(s) for s in scales],
        "control_guidance_start": float(starts[0]) if one else [float(s) for s in starts],
        "control_guidance_end": float(ends[0]) if one else [float(e) for e in ends],
    }
    if name != "sd3":
        kwargs["guess_mode"] = bool(spec.guess_mode)
    return ControlCall(nets[0] if one else nets, kwargs, maps, tuple(units), seeds_global_rng=name == "sd3")
