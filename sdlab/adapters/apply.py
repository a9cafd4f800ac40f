"""LoRAs and embeddings applied for one generation, the user's pipeline untouched.

A1111 writes LoRA deltas into the model's weights and restores them afterwards; diffusers injects
peft layers into the user's modules. sdlab does neither to the pipeline it is handed: for one call it
builds a *structural clone* of each component it must change (every module object copied, every
weight tensor shared, so a clone costs no weight memory), and

1. loads each LoRA into the clones through diffusers' own loader (``load_lora_adapter`` for the UNet
   or SD 3 transformer; for text encoders diffusers' key conversion and ``LoraConfig``, injected with
   peft as transformers' ``load_adapter`` does), each under its own adapter name, unfused, with
   A1111's text-encoder and UNet multipliers as peft scales (diffusers' ``set_adapters``);
2. gives each embedding's vectors new token ids: a copied tokenizer learns placeholder tokens and the
   cloned text encoder a token-embedding table with the vectors appended (what diffusers'
   ``load_textual_inversion`` does to the pipeline itself), and the embedding's name in the prompt
   becomes its placeholders, kept in one 75-token chunk as A1111 keeps an embedding's vectors;
3. puts a ``<hypernet:NAME:STRENGTH>`` (:mod:`sdlab.adapters.hypernetwork`) into the cloned UNet's attention;
4. returns a pipeline of the same class made with ``from_pipe`` from the clones and the user's other
   components. After the call nothing refers to the clones; the user's modules, parameters (their
   ``requires_grad`` flags included) and adapters are as they were.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field

from ..errors import ValidationError
from ..models import family as model_family
from ..models import share_pipeline
from ..prompts import keep_together
from .embeddings import Embedding, embedding_hash, read_embedding
from .lora import load_lora, lora_hash
from .networks import (AdapterFolders, find_embedding_names, has_extra_networks, hypernetworks, parse_extra_networks, preflight,
                       replace_embedding_names)

TEXT_ENCODERS = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))
_ADAPTER_PREFIX = "sdlab_call_"


def clone_module(module, memo: dict | None = None):
    """A copy of ``module``'s tree of module objects sharing every parameter and buffer tensor.

    Changing the clone's structure (peft replacing a Linear, a new embedding table) leaves the
    original's untouched; writing *into* a shared tensor would not, and nothing here does.
    """
    memo = {} if memo is None else memo
    if id(module) in memo:
        return memo[id(module)]
    if "forward" in module.__dict__ or type(module).__name__ == "OptimizedModule":  # accelerate's offload hooks,
        # torch.compile: a forward bound to the original module would run the original's layers, not the clone's
        raise ValidationError(f"{type(module).__name__}: this pipeline runs under CPU-offload hooks or torch.compile, which bind "
                              "its modules' forward; apply LoRAs and embeddings on a pipeline without them")
    clone = copy.copy(module)
    memo[id(module)] = clone
    clone._modules = {k: (None if m is None else clone_module(m, memo)) for k, m in module._modules.items()}
    clone._parameters = dict(module._parameters)
    clone._buffers = dict(module._buffers)
    for name, value in module.__dict__.items():  # hooks, peft's per-adapter r/alpha/scaling dicts, peft_config...
        if name not in ("_modules", "_parameters", "_buffers") and isinstance(value, (dict, list, set)):
            clone.__dict__[name] = copy.copy(value)  # ...so that adding an adapter to the clone adds it there only
    if "config" in module.__dict__ and hasattr(module.__dict__["config"], "to_dict"):  # a transformers config
        clone.__dict__["config"] = copy.deepcopy(module.__dict__["config"])
    return clone


@contextlib.contextmanager
def _flags_kept(*modules):
    """Restore every parameter's ``requires_grad`` (peft marks shared base weights frozen)."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


@dataclass
class Applied:
    """What one call applied: the pipeline to run, the prompts to encode, and the infotext entries."""

    pipe: object
    prompt: str
    negative_prompt: str
    loras: list = field(default_factory=list)  # (name as written, file, hash, te, unet)
    embeddings: list = field(default_factory=list)  # (name, file, hash)
    entered: list = field(default_factory=list)  # context managers holding a hypernetwork in the clone, kept open for the call
    replacements: dict = field(default_factory=dict)  # embedding name -> its placeholder tokens in this pipeline's tokenizer

    def rewrite(self, prompt: str, negative_prompt: str) -> tuple[str, str]:
        """Another prompt pair with the same adapters, as this pipeline encodes it: tags cut, embedding names replaced."""
        text, _ = parse_extra_networks(prompt)
        return replace_embedding_names(text, self.replacements), replace_embedding_names(negative_prompt, self.replacements)

    def record(self, spec):
        """``spec`` with this call's ``Lora hashes`` / ``TI hashes`` in its extra fields (any earlier ones replaced)."""
        kept = {k: v for k, v in spec.extra.items() if k not in ("Lora hashes", "TI hashes")}
        return spec.replace(extra={**kept, **self.infotext()})

    def infotext(self) -> dict:
        """A1111's ``Lora hashes`` / ``TI hashes`` entries (names without ``:`` and ``,``, as A1111 writes them)."""
        out = {}
        clean = lambda n: n.replace(":", "").replace(",", "")  # noqa: E731
        if self.loras:
            out["Lora hashes"] = ", ".join(f"{clean(name)}: {h}" for name, _, h, *_ in dict((u[0], u) for u in self.loras).values())
        if self.embeddings:
            out["TI hashes"] = ", ".join(f"{clean(name)}: {h}" for name, _, h in self.embeddings)
        return out


def prepare_adapters(pipe, spec, folders: AdapterFolders | None) -> Applied:
    """Resolve the spec's ``<lora:...>`` tags and embedding names against ``folders`` and build this call's pipeline."""
    prompt, _ = parse_extra_networks(spec.prompt)
    negative = spec.negative_prompt
    loras = preflight(spec.prompt, folders)
    if folders is None:
        return Applied(pipe, prompt, negative)
    fam = model_family(pipe)
    names = find_embedding_names(prompt + "\n" + negative, folders.embeddings()) if folders.embedding_dirs else []
    hypers = hypernetworks(spec.prompt, folders)
    if not loras and not names and not hypers:
        return Applied(pipe, prompt, negative)
    applied = Applied(pipe, prompt, negative)
    parts: dict = {}
    if loras:
        _apply_loras(pipe, fam, loras, folders, parts)
        applied.loras = [(u.name, path, lora_hash(path), u.te, u.unet) for u, path in loras]
    if names:
        if fam == "sd3":
            raise ValidationError(f"prompt: {', '.join(names)} names an embedding; textual-inversion embeddings work "
                                  "with SD 1.x/2.x and SDXL (CLIP text encoders), not sd3")
        files = folders.embeddings()
        embeddings = [read_embedding(files[n], folders.allow_pickle) for n in names]
        applied.replacements = _apply_embeddings(pipe, embeddings, parts)
        applied.prompt, applied.negative_prompt = applied.rewrite(spec.prompt, negative)
        applied.embeddings = [(e.name, e.path, embedding_hash(e.path)) for e in embeddings]
    if hypers:
        applied.entered.append(_apply_hypernetwork(pipe, hypers[0], folders, parts))
    applied.pipe = share_pipeline(type(pipe), pipe, **parts)  # in the pipeline's dtype (from_pipe casts to fp32 otherwise)
    applied.pipe.set_progress_bar_config(disable=True)
    return applied


def _apply_hypernetwork(pipe, found, folders: AdapterFolders, parts: dict) -> None:
    """A1111's hypernetwork at the tag's strength in every attention of a cloned UNet (sdlab.adapters.hypernetwork
    sets its processors on the clone's attention modules; the clone is dropped after the call)."""
    from . import hypernetwork as hn

    use, path = found
    if getattr(pipe, "unet", None) is None:
        raise ValidationError(f"prompt: {use.text}: hypernetworks act on a UNet's attention (SD 1.x, 2.x, SDXL), not sd3's transformer")
    network = hn.load(path, allow_pickle=folders.allow_pickle)
    context = hn.applied(_part(pipe, parts, "unet"), network, use.te)
    context.__enter__()  # exits (on the clone) when the Applied holding it is dropped after the call
    return context


def _part(pipe, parts: dict, name: str):
    if name not in parts:
        parts[name] = clone_module(getattr(pipe, name))
    return parts[name]


def _apply_loras(pipe, fam: str, loras: list, folders: AdapterFolders, parts: dict) -> None:
    denoiser = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    scales: dict[str, list] = {}
    originals = [m for m in (getattr(pipe, n, None) for n in (denoiser, "text_encoder", "text_encoder_2")) if m is not None]
    with _flags_kept(*originals):
        for k, (use, path) in enumerate(loras):
            adapter = f"{_ADAPTER_PREFIX}{k}"
            config = getattr(pipe, "unet").config if denoiser == "unet" else None
            state_dict, alphas, metadata = load_lora(path, fam, unet_config=config, allow_pickle=folders.allow_pickle)
            prefixes = {key.split(".")[0] for key in state_dict}
            if denoiser in prefixes:
                model = _part(pipe, parts, denoiser)
                model.load_lora_adapter(state_dict, prefix=denoiser, network_alphas=alphas, adapter_name=adapter,
                                        metadata=metadata, _pipeline=None)
                scales.setdefault(denoiser, []).append((adapter, use.unet))
            for name in ("text_encoder", "text_encoder_2"):
                if name in prefixes and getattr(pipe, name, None) is not None:
                    _load_text_encoder_lora(_part(pipe, parts, name), state_dict, alphas, metadata, name, adapter)
                    scales.setdefault(name, []).append((adapter, use.te))
            if not prefixes & ({denoiser, "text_encoder", "text_encoder_2"}):
                raise ValidationError(f"lora: {path.name} has no weights for this {fam} pipeline's {denoiser} or text encoders")
        for name, pairs in scales.items():
            _activate(parts[name], dict(pairs), _active_adapters(getattr(pipe, name)))


def _load_text_encoder_lora(encoder, state_dict, alphas, metadata, prefix: str, adapter: str) -> None:
    """diffusers' ``_load_lora_into_text_encoder`` up to its ``LoraConfig``, injected with peft directly
    (transformers' ``load_adapter`` wants a newer peft than the one pinned)."""
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft
    from diffusers.utils.peft_utils import _create_lora_config
    from peft import inject_adapter_in_model, set_peft_model_state_dict

    sd = {k.removeprefix(f"{prefix}."): v for k, v in state_dict.items() if k.startswith(f"{prefix}.")}
    md = {k.removeprefix(f"{prefix}."): v for k, v in metadata.items() if k.startswith(f"{prefix}.")} if metadata else None
    if md and not hasattr(encoder, "text_model") and md.get("target_modules"):  # peft matches targets by suffix
        md["target_modules"] = [t.removeprefix("text_model.") for t in md["target_modules"]]
    sd = convert_state_dict_to_peft(convert_state_dict_to_diffusers(sd, original_type=_te_layout(sd)))
    if not hasattr(encoder, "text_model"):
        sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    rank = {f"{n}.lora_B.weight": sd[f"{n}.lora_B.weight"].shape[1] for n, _ in encoder.named_modules()
            if n.endswith((".q_proj", ".k_proj", ".v_proj", ".out_proj", ".fc1", ".fc2")) and f"{n}.lora_B.weight" in sd}
    if alphas:
        alphas = {k.removeprefix(f"{prefix}."): v for k, v in alphas.items() if k.split(".")[0] == prefix}
    config = _create_lora_config(sd, alphas or None, md or None, rank, is_unet=False)
    inject_adapter_in_model(config, encoder, adapter_name=adapter)
    result = set_peft_model_state_dict(encoder, sd, adapter_name=adapter)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise ValidationError(f"lora: {len(unexpected)} text-encoder weights match no layer of this model (e.g. {unexpected[0]})")


def _te_layout(sd: dict):
    """The layout diffusers' converter would guess, made explicit for kohya files whose text-encoder part lacks
    ``out_proj`` (diffusers guesses its old layout only from a ``to_out_lora`` key, and refuses such files)."""
    from diffusers.utils.state_dict_utils import StateDictType

    if any("_lora.down." in k or "_lora.up." in k for k in sd) and not any("to_out_lora" in k for k in sd):
        return StateDictType.DIFFUSERS_OLD
    return None


def _active_adapters(model) -> dict[str, list]:
    """``{module name: its active adapters}`` for the peft layers the user's model already has."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {n: list(m.active_adapters) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)}


def _activate(model, weights: dict[str, float], before: dict[str, list]) -> None:
    """Turn this call's adapters on beside those the user had active (``before``; loading switches a model to the
    new adapter alone), at A1111's multipliers (peft's ``set_scale``)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            module.set_adapter(before.get(name, []) + [a for a in weights if a in module.lora_A])
            for adapter, weight in weights.items():
                if adapter in module.lora_A:
                    module.set_scale(adapter, weight)


def _apply_embeddings(pipe, embeddings: list[Embedding], parts: dict) -> dict[str, str]:
    """Placeholder tokens for each embedding in copies of the tokenizers, its vectors in cloned text encoders."""
    import torch

    pairs = [(t, e) for t, e in TEXT_ENCODERS if getattr(pipe, e, None) is not None and getattr(pipe, t, None) is not None]
    replacements: dict[str, str] = {}
    placeholders = {emb.name: [f"<sdlab-ti-{i}-{j}>" for j in range(emb.n_vectors)] for i, emb in enumerate(embeddings)}
    for emb in embeddings:
        missing = [e for _, e in pairs if e not in emb.vectors]
        if missing:
            raise ValidationError(f"embedding: {emb.name} has vectors for {', '.join(emb.vectors)} but this model also needs "
                                  f"{', '.join(missing)} (an SDXL embedding has clip_l and clip_g)")
        replacements[emb.name] = " ".join(placeholders[emb.name])
    for tok_name, enc_name in pairs:
        tokenizer = copy.deepcopy(getattr(pipe, tok_name))
        tokens = [p for emb in embeddings for p in placeholders[emb.name]]
        tokenizer.add_tokens(tokens)
        encoder = _part(pipe, parts, enc_name)
        table = encoder.get_input_embeddings()
        weight = table.weight.detach()
        ids = tokenizer.convert_tokens_to_ids(tokens)
        vectors = torch.cat([emb.vectors[enc_name] for emb in embeddings]).to(weight.device, weight.dtype)
        if vectors.shape[-1] != weight.shape[1]:
            emb = next(e for e in embeddings if e.vectors[enc_name].shape[-1] != weight.shape[1])
            raise ValidationError(f"embedding: {emb.name} has {emb.vectors[enc_name].shape[-1]}-wide vectors for {enc_name}; "
                                  f"this model's takes {weight.shape[1]} (an embedding made for another model family)")
        rows = max(weight.shape[0], max(ids) + 1)
        new = torch.empty(rows, weight.shape[1], dtype=weight.dtype, device=weight.device)
        new[: weight.shape[0]] = weight
        new[ids] = vectors
        encoder.set_input_embeddings(torch.nn.Embedding.from_pretrained(new, freeze=True, padding_idx=table.padding_idx))
        keep_together(tokenizer, {tokenizer.convert_tokens_to_ids(placeholders[e.name][0]): e.n_vectors for e in embeddings})
        parts[tok_name] = tokenizer
    return replacements


def uses_adapters(spec, folders: AdapterFolders | None) -> bool:
    """Whether :func:`prepare_adapters` would change anything for ``spec``: an extra-network tag in the prompt (any
    kind: unknown ones are cut from the text) or, with embedding folders, an embedding's name in either prompt."""
    if has_extra_networks(spec.prompt):
        return True
    if folders is None or not folders.embedding_dirs:
        return False
    return bool(find_embedding_names(spec.prompt + "\n" + spec.negative_prompt, folders.embeddings()))


def adapter_signature(spec, folders: AdapterFolders | None) -> tuple | None:
    """What :func:`prepare_adapters` builds for ``spec`` (None: nothing). Specs with one signature can share one
    adapted pipeline, each encoding its own prompt through :meth:`Applied.rewrite`."""
    if not uses_adapters(spec, folders):
        return None
    loras = tuple((use.name, str(path), use.te, use.unet) for use, path in preflight(spec.prompt, folders))
    hypers = tuple((str(path), use.te) for use, path in hypernetworks(spec.prompt, folders))
    names: tuple = ()
    if folders is not None and folders.embedding_dirs:
        text, _ = parse_extra_networks(spec.prompt)
        names = tuple(sorted(find_embedding_names(text + "\n" + spec.negative_prompt, folders.embeddings())))
    return loras, hypers, names
