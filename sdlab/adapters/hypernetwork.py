"""A1111 hypernetworks: small residual MLPs that bend the attention's keys and values, and their files.

A hypernetwork (NovelAI's, as AUTOMATIC1111's web UI trains and loads it) holds,
for each enabled width ``d`` (768 for SD 1.x's text context, 320/640/1280 for
its self-attention), two modules: one applied to the context before ``to_k``,
one before ``to_v``. Each module is ``x + MLP(x) * strength``, the MLP's widths
being ``d`` times the layer structure (``1, 2, 1``: ``d -> 2d -> d``). A1111
applies it in every attention whose key/value input has an enabled width (the
text context in cross-attention, the image features in self-attention), so the
widths enabled decide where it acts.

:func:`applied` puts it into a UNet for the length of a ``with`` block, through
attention processors that compute exactly what diffusers' ``AttnProcessor2_0``
does but with the two bent contexts, and puts the UNet's own processors back
on exit (also on an error or a Cancel): the user's pipeline is the same object,
bit for bit, before and after. At strength 0 each module returns its input
unchanged, so the images are pixel-identical to the model's own.

Files: A1111's ``.pt`` layout (``{width: (k_state, v_state), 'layer_structure': ...,
'activation_func': ..., ...}`` through ``torch.save``), read only with the same
explicit ``allow_pickle`` consent as checkpoints, and a safetensors form of the
same tensors with the settings as metadata.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import UnsafeCheckpointError
from ..models import rebuild_pipeline
from ..validation import Check, Interval, Options, invalid, validate_fields

ACTIVATIONS = {"linear": None, "relu": torch.nn.ReLU, "leakyrelu": torch.nn.LeakyReLU, "elu": torch.nn.ELU,
               "swish": torch.nn.Hardswish, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}
WEIGHT_INITS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")
SAFETENSORS_FORMAT = "sdlab-hypernetwork"


def _structure_ok(s) -> bool:
    return len(s) >= 2 and float(s[0]) == 1 and float(s[-1]) == 1 and all(float(x) > 0 for x in s)


@dataclass(frozen=True)
class HypernetworkConfig:
    """A1111's options for a new hypernetwork (the names its file records)."""

    sizes: tuple[int, ...] = (768, 320, 640, 1280)  # widths it acts on (A1111's "enable_sizes")
    layer_structure: tuple[float, ...] = (1, 2, 1)  # MLP widths as multiples of the input width
    activation_func: str = "linear"  # between layers (not after the last unless activate_output)
    weight_init: str = "Normal"  # A1111's: N(0, 0.01) weights and zero biases
    add_layer_norm: bool = False
    activate_output: bool = False
    name: str = "hypernetwork"

    _parameter_constraints = {
        "sizes": [Check(lambda s: len(s) > 0 and all(isinstance(x, int) and x > 0 for x in s), "one or more widths (whole numbers > 0)")],
        "layer_structure": [Check(_structure_ok, "multipliers starting and ending with 1, e.g. (1, 2, 1)")],
        "activation_func": [Options(ACTIVATIONS)], "weight_init": [Options(WEIGHT_INITS)],
        "add_layer_norm": [bool], "activate_output": [bool], "name": [str],
    }

    def __post_init__(self) -> None:
        validate_fields(self)


class HypernetworkModule(torch.nn.Module):
    """``x + MLP(x) * strength``; the MLP is a ``Sequential`` named ``linear`` with A1111's layer order,
    so its state dict keys (``linear.0.weight`` ...) are the ones A1111 saves and loads."""

    def __init__(self, dim: int, structure, activation: str = "linear", add_layer_norm: bool = False,
                 activate_output: bool = False, dropout: tuple[float, ...] | None = None) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        n = len(structure)
        for i in range(n - 1):
            layers.append(torch.nn.Linear(int(dim * structure[i]), int(dim * structure[i + 1])))
            if ACTIVATIONS[activation] is not None and (i < n - 2 or activate_output):
                layers.append(ACTIVATIONS[activation]())
            if add_layer_norm:
                layers.append(torch.nn.LayerNorm(int(dim * structure[i + 1])))
            if dropout is not None and dropout[i + 1] > 0:
                layers.append(torch.nn.Dropout(p=float(dropout[i + 1])))
        self.linear = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        return x + self.linear(x) * strength


class Hypernetwork(torch.nn.Module):
    """One (key, value) :class:`HypernetworkModule` pair per enabled width, plus A1111's settings."""

    def __init__(self, cfg: HypernetworkConfig = HypernetworkConfig(), dropout: tuple[float, ...] | None = None,
                 info: dict | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.dropout = dropout
        self.info = dict(info or {})  # step, sd_checkpoint, sd_checkpoint_name as the file had them
        self.layers = torch.nn.ModuleDict({
            str(size): torch.nn.ModuleList([
                HypernetworkModule(size, cfg.layer_structure, cfg.activation_func, cfg.add_layer_norm, cfg.activate_output, dropout)
                for _ in range(2)
            ]) for size in cfg.sizes
        })
        self._initialise(cfg.weight_init)

    def _initialise(self, how: str) -> None:
        for module in self.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm)):
                w, b = module.weight.data, module.bias.data
                if how == "Normal" or isinstance(module, torch.nn.LayerNorm):
                    torch.nn.init.normal_(w, mean=0.0, std=0.01)
                    torch.nn.init.zeros_(b)
                else:
                    init = {"XavierUniform": torch.nn.init.xavier_uniform_, "XavierNormal": torch.nn.init.xavier_normal_,
                            "KaimingUniform": torch.nn.init.kaiming_uniform_, "KaimingNormal": torch.nn.init.kaiming_normal_}[how]
                    init(w)
                    torch.nn.init.zeros_(b)

    def contexts(self, context: torch.Tensor, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The key and value inputs for ``context`` (unchanged when its width is not enabled)."""
        pair = self.layers[str(context.shape[-1])] if str(context.shape[-1]) in self.layers else None
        if pair is None:
            return context, context
        return pair[0](context, strength), pair[1](context, strength)


class HypernetworkAttnProcessor:
    """diffusers' ``AttnProcessor2_0``, op for op, with the key and value computed from the
    hypernetwork's two contexts (A1111's ``apply_hypernetworks``). Not a module: setting it
    leaves the UNet's parameters and state dict as they were."""

    def __init__(self, hypernetwork: Hypernetwork, strength: float) -> None:
        self.hypernetwork, self.strength = hypernetwork, strength

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        context_k, context_v = self.hypernetwork.contexts(encoder_hidden_states, self.strength)
        key, value = attn.to_k(context_k), attn.to_v(context_v)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def _attention_modules(unet) -> dict:
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    found = {name: m for name, m in unet.named_modules() if isinstance(m, Attention)}
    for name, module in found.items():
        if not isinstance(module.processor, (AttnProcessor, AttnProcessor2_0, HypernetworkAttnProcessor)):
            raise invalid("model", type(module.processor).__name__,
                          "a UNet with diffusers' standard attention (SD 1.x, SD 2.x, SDXL); SD 3's joint attention has no hypernetworks in A1111")
    return found


@contextlib.contextmanager
def applied(pipe_or_unet, hypernetwork: Hypernetwork, strength: float = 1.0):
    """Within the block, every attention of the pipeline's UNet runs through ``hypernetwork`` at
    ``strength``; on exit each attention gets back the very processor object it had."""
    if not Interval(float, 0, None).accepts(strength):
        raise invalid("strength", strength, "a number >= 0")
    unet = getattr(pipe_or_unet, "unet", pipe_or_unet)
    modules = _attention_modules(unet)
    saved = {name: m.processor for name, m in modules.items()}
    weight = next(unet.parameters())
    processor = HypernetworkAttnProcessor(hypernetwork.to(device=weight.device, dtype=weight.dtype), float(strength))
    try:
        for module in modules.values():
            module.processor = processor
        yield unet
    finally:
        for name, module in modules.items():
            module.processor = saved[name]


def with_hypernetwork(pipe, hypernetwork: Hypernetwork, strength: float = 1.0):
    """A new pipeline sharing ``pipe``'s components except the UNet: a copy of it that always runs through
    ``hypernetwork`` at ``strength`` (``pipe`` is not changed). For keeping a hypernetwork on beyond a ``with``
    block (a panel's preview, an evaluation); costs one UNet's memory."""
    import copy

    if not Interval(float, 0, None).accepts(strength):
        raise invalid("strength", strength, "a number >= 0")
    unet = copy.deepcopy(pipe.unet)
    weight = next(unet.parameters())
    processor = HypernetworkAttnProcessor(copy.deepcopy(hypernetwork).to(device=weight.device, dtype=weight.dtype), float(strength))
    for module in _attention_modules(unet).values():
        module.processor = processor
    return rebuild_pipeline(pipe, unet=unet)


def to_a1111(hn: Hypernetwork) -> dict:
    """The dict A1111's ``Hypernetwork.save`` writes with ``torch.save``."""
    state: dict = {int(size): tuple({k: v.detach().cpu().clone() for k, v in m.state_dict().items()} for m in pair)
                   for size, pair in hn.layers.items()}
    cfg = hn.cfg
    state.update({
        "step": int(hn.info.get("step", 0)), "name": cfg.name, "layer_structure": [float(x) for x in cfg.layer_structure],
        "activation_func": cfg.activation_func, "is_layer_norm": cfg.add_layer_norm, "weight_initialization": cfg.weight_init,
        "sd_checkpoint": hn.info.get("sd_checkpoint"), "sd_checkpoint_name": hn.info.get("sd_checkpoint_name"),
        "activate_output": cfg.activate_output, "use_dropout": hn.dropout is not None,
        "dropout_structure": list(hn.dropout) if hn.dropout is not None else [0.0] * len(cfg.layer_structure),
        "last_layer_dropout": False,
    })
    return state


def _legacy_dropout(structure, use_dropout: bool, last_layer_dropout: bool) -> tuple[float, ...] | None:
    """Where an A1111 file without ``dropout_structure`` had its Dropout layers (p = 0.3)."""
    if not use_dropout:
        return None
    n = len(structure)
    return tuple(0.0 if i == 0 else (0.3 if (i - 1 < n - 3 or (last_layer_dropout and i - 1 < n - 2)) else 0.0) for i in range(n))


def from_a1111(state: dict, name: str | None = None) -> Hypernetwork:
    """A :class:`Hypernetwork` from the dict in an A1111 ``.pt`` file (old ``linear1``/``linear2`` keys too)."""
    sizes = tuple(k for k in state if isinstance(k, int))  # the file's order
    if not sizes:
        raise invalid("hypernetwork", sorted(map(str, state))[:6], "an A1111 hypernetwork (integer width keys holding (k, v) state dicts)")
    structure = tuple(state.get("layer_structure") or (1, 2, 1))
    dropout = state.get("dropout_structure")
    dropout = tuple(dropout) if dropout is not None and any(float(p) > 0 for p in dropout) else (
        None if dropout is not None else _legacy_dropout(structure, bool(state.get("use_dropout")), bool(state.get("last_layer_dropout", True))))
    cfg = HypernetworkConfig(
        sizes=sizes, layer_structure=structure, activation_func=state.get("activation_func") or "linear",
        weight_init=state.get("weight_initialization") or "Normal", add_layer_norm=bool(state.get("is_layer_norm", False)),
        activate_output=bool(state.get("activate_output", False)), name=str(state.get("name") or name or "hypernetwork"),
    )
    hn = Hypernetwork(cfg, dropout, {k: state.get(k) for k in ("step", "sd_checkpoint", "sd_checkpoint_name")})
    renames = {"linear1.": "linear.0.", "linear2.": "linear.1."}  # A1111's fix_old_state_dict
    for size in sizes:
        for module, sd in zip(hn.layers[str(size)], state[size]):
            sd = {next((new + k[len(old):] for old, new in renames.items() if k.startswith(old)), k): v for k, v in sd.items()}
            try:
                module.load_state_dict(sd)
            except RuntimeError as error:
                raise invalid("hypernetwork", f"width {size}", f"state dicts matching its layer_structure {list(structure)} ({str(error).splitlines()[0]})") from None
    return hn


def save(hn: Hypernetwork, path: str | Path) -> Path:
    """Write ``hn`` as A1111's ``.pt`` (``torch.save`` of :func:`to_a1111`) or, for ``.safetensors``, the same
    tensors under ``{width}.{0|1}.{key}`` with the settings as JSON metadata. Atomic."""
    from safetensors.torch import save_file

    from ..io import atomic_path

    path = Path(path)
    state = to_a1111(hn)
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            tensors = {f"{size}.{j}.{k}": v.contiguous() for size in hn.cfg.sizes for j, sd in enumerate(state[size]) for k, v in sd.items()}
            settings = {k: v for k, v in state.items() if not isinstance(k, int)}
            save_file(tensors, str(tmp), metadata={"format": SAFETENSORS_FORMAT, "settings": json.dumps(settings)})
        else:
            torch.save(state, tmp)
    return path


def load(path: str | Path, allow_pickle: bool = False) -> Hypernetwork:
    """Read a hypernetwork file: ``.safetensors`` (sdlab's form) or A1111's ``.pt`` (pickle: only with
    ``allow_pickle=True``, and then through ``torch.load(weights_only=True)``, which builds no objects)."""
    path = Path(path)
    if not path.is_file():
        raise invalid("hypernetwork", str(path), "an existing .pt or .safetensors file")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != SAFETENSORS_FORMAT:
                raise invalid("hypernetwork", str(path), f"a safetensors file written by sdlab (metadata format={SAFETENSORS_FORMAT})")
            state: dict = json.loads(meta["settings"])
            for key in f.keys():
                size, j, rest = key.split(".", 2)
                state.setdefault(int(size), ({}, {}))[int(j)][rest] = f.get_tensor(key)
        return from_a1111(state, path.stem)
    if not allow_pickle:
        raise UnsafeCheckpointError(
            f"hypernetwork: {path.name} is a pickle file, and loading a pickle can run code from it; "
            "pass allow_pickle=True (CLI: --allow-pickle) if you trust its source, or save it as .safetensors")
    return from_a1111(torch.load(path, map_location="cpu", weights_only=True), path.stem)


def sizes_for(pipe) -> tuple[int, ...]:
    """A1111's widths for ``pipe``: the text context's and each attention level's (as 768, 320, 640, 1280 for SD 1.x)."""
    unet = pipe.unet
    widths = [int(unet.config.cross_attention_dim)]
    for name, module in _attention_modules(unet).items():
        widths.append(int(module.to_k.in_features))
    return tuple(dict.fromkeys(widths))


def new(pipe, cfg: HypernetworkConfig | None = None, seed: int = 0, **options) -> Hypernetwork:
    """A freshly initialised hypernetwork for ``pipe`` (``options`` override :class:`HypernetworkConfig`;
    ``sizes`` defaults to :func:`sizes_for`), from ``seed``."""
    base = cfg or HypernetworkConfig(**{"sizes": sizes_for(pipe), **options})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Hypernetwork(base)


