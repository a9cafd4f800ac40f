"""Textual inversion (Gal et al. 2022): a new word whose input vector is learned from the user's images.

As diffusers' ``examples/textual_inversion/textual_inversion.py``: the placeholder
token (and ``token_1`` ... for several vectors) is added to a *copy* of the
tokenizer and its rows to a copy of the text encoder's input embedding, started
from an existing word's vector; only those rows learn. After every optimiser step
the other rows are put back exactly (AdamW's weight decay would otherwise move them),
so the rest of the model is bit for bit the user's. SDXL learns one vector per text
encoder (diffusers' SDXL script: ``clip_l`` and ``clip_g``).

The method can only move the *text* side: it finds a vector that makes the frozen
UNet draw the images, so it reaches what the model can already draw (a new word for
a yellow circle) and not a shape it has no weights for.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from ..progress import Callback
from ..validation import Interval, invalid, validate_fields
from .common import BASE_CONSTRAINTS, Dataset, TrainConfig, autocast, check_family, check_size, diffusion_loss, draw, rebuild
from .common import encode_latents, encode_text, noise_scheduler, sdxl_time_ids, snr_weights, train_loop


@dataclass(frozen=True)
class EmbeddingConfig(TrainConfig):
    """Textual inversion's run (diffusers' defaults scaled to small models: few vectors, high lr)."""

    steps: int = 600
    lr: float = 5e-3  # on the new rows only
    num_vectors: int = 1  # vectors behind the token (token, token_1, ...)

    _parameter_constraints = {**BASE_CONSTRAINTS, "num_vectors": [Interval(int, 1, 16)]}

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.caption_dropout:  # a dropped caption holds no token: its step would teach the vector nothing
            raise invalid("caption_dropout", self.caption_dropout, "0 for textual inversion (only the token's vector learns)")


def text_parts(pipe) -> tuple[list, list]:
    """(tokenizers, text encoders) of a pipeline: one pair, or SDXL's two."""
    toks = [pipe.tokenizer] + ([pipe.tokenizer_2] if getattr(pipe, "tokenizer_2", None) is not None else [])
    encs = [pipe.text_encoder] + ([pipe.text_encoder_2] if getattr(pipe, "text_encoder_2", None) is not None else [])
    return toks, encs


def placeholder_tokens(token: str, num_vectors: int) -> list[str]:
    """diffusers' names for a multi-vector token: ``token``, ``token_1``, ..."""
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


def expand(text: str, token: str, num_vectors: int) -> str:
    """A caption with ``token`` written out as all its vectors' tokens (what diffusers' loader does)."""
    return text.replace(token, " ".join(placeholder_tokens(token, num_vectors))) if num_vectors > 1 else text


def check_token_text(token: str) -> None:
    """Refuse a token that is not one word A1111's prompt syntax leaves alone and that can name a file (the result
    of every method is saved as ``<token>.safetensors`` or ``.pt``)."""
    if not isinstance(token, str) or not token.strip() or any(c.isspace() or c in "<>:,()[]/\\" for c in token):
        # A1111's prompt syntax gives these characters meaning (<lora:...>, (word:1.2), [a:b:0.5]); / and \ split paths
        raise invalid("token", token, "one word without spaces or the characters < > : , ( ) [ ] / \\")


def check_token(tokenizer, token: str) -> None:
    """Refuse a token the tokenizer already has (a whole vocabulary entry, with or without ``</w>``, or an
    added token): its vector belongs to the model's own word."""
    check_token_text(token)
    vocab = tokenizer.get_vocab()
    pieces = tokenizer.tokenize(token)
    if token in vocab or f"{token}</w>" in vocab or token.lower() in vocab or f"{token.lower()}</w>" in vocab or (
            len(pieces) == 1 and pieces[0] in (f"{token.lower()}</w>", token.lower())):
        raise invalid("token", token, "a word not already in the tokenizer's vocabulary (e.g. my-concept)")


def init_ids(tokenizer, word: str) -> list[int]:
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        raise invalid("init_word", word, "a word that is a single token of the model's tokenizer")
    return ids


@dataclass
class Embedding:
    """A learned token: its vectors per text encoder (``clip_l``/``clip_g`` for SDXL, else one)."""

    token: str
    vectors: list[torch.Tensor]  # one (num_vectors, width) tensor per text encoder
    info: dict

    def state_dict(self) -> dict[str, torch.Tensor]:
        """diffusers' file layout: ``{token: vectors}``, or SDXL's ``{"clip_l": ..., "clip_g": ...}``."""
        if len(self.vectors) == 2:
            return {"clip_l": self.vectors[0].contiguous(), "clip_g": self.vectors[1].contiguous()}
        return {self.token: self.vectors[0].contiguous()}

    def save(self, path: str | Path) -> Path:
        """Write a safetensors file plain ``pipe.load_textual_inversion`` reads (helper B's writer when present)."""
        path = Path(path)
        try:
            from ..adapters.embeddings import save_embedding
        except ImportError:
            save_embedding = None
        if save_embedding is not None:
            vectors = self.state_dict() if len(self.vectors) == 2 else self.vectors[0].contiguous()
            return Path(save_embedding(path, self.token, vectors))
        from safetensors.torch import save_file

        from ..io import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(self.state_dict(), str(tmp), metadata={"token": self.token})
        return path

    def apply(self, pipe):
        """A new pipeline sharing ``pipe``'s components but with copies of its tokenizer(s) and text encoder(s)
        that know the token (``pipe`` is not changed)."""
        toks, encs = text_parts(pipe)
        n = self.vectors[0].shape[0]
        names = placeholder_tokens(self.token, n)
        new_parts = {}
        for i, (tok, enc, vec) in enumerate(zip(toks, encs, self.vectors)):
            tok, enc = copy.deepcopy(tok), copy.deepcopy(enc)
            tok.add_tokens(names)
            enc.resize_token_embeddings(len(tok), mean_resizing=False)
            with torch.no_grad():
                enc.get_input_embeddings().weight[tok.convert_tokens_to_ids(names)] = vec.to(enc.dtype).to(enc.device)
            suffix = "" if i == 0 else "_2"
            new_parts[f"tokenizer{suffix}"], new_parts[f"text_encoder{suffix}"] = tok, enc
        return rebuild(pipe, **new_parts)


def train_embedding(pipe, data: Dataset, token: str, init_word: str, out: str | Path, cfg: EmbeddingConfig = EmbeddingConfig(),
                    callback: Callback | None = None, progress: bool = False) -> Embedding:
    """Learn ``token`` from ``data`` (captions contain the token); resumable from ``out``."""
    fam = check_family(pipe, "textual inversion")
    toks, encs = text_parts(pipe)
    for tok in toks:
        check_token(tok, token)
    starts = [init_ids(tok, init_word)[0] for tok in toks]
    check_size(pipe, data.images)
    torch.manual_seed(cfg.seed)
    names = placeholder_tokens(token, cfg.num_vectors)
    toks = [copy.deepcopy(t) for t in toks]
    encs = [copy.deepcopy(e).requires_grad_(False).eval() for e in encs]
    rows, originals = [], []
    for tok, enc, start in zip(toks, encs, starts):
        tok.add_tokens(names)
        enc.resize_token_embeddings(len(tok), mean_resizing=False)
        ids = tok.convert_tokens_to_ids(names)
        table = enc.get_input_embeddings().weight
        with torch.no_grad():
            table[ids] = table[start].clone()
        table.requires_grad_(True)
        if cfg.gradient_checkpointing:
            enc.gradient_checkpointing_enable()
        rows.append(ids)
        originals.append(table.detach().clone())
    tables = [e.get_input_embeddings().weight for e in encs]
    unet = pipe.unet
    sched, device = noise_scheduler(pipe), unet.device
    weights = snr_weights(sched, cfg.min_snr_gamma)
    latents = encode_latents(pipe, data.images).to(device)
    cells = data.cell_weights(tuple(latents.shape[-2:]), cfg.mask_weight)
    captions = [expand(c, token, cfg.num_vectors) for c in data.captions]
    h, w = data.images.shape[1:3]
    frozen_unet = [p.requires_grad for p in unet.parameters()]

    def loss(step: int, g: torch.Generator) -> torch.Tensor:
        idx = draw(len(latents), cfg.batch, g)
        with autocast(cfg, device):
            states, pooled = encode_text(encs, toks, [captions[i] for i in idx], fam == "sdxl")
            added = {"text_embeds": pooled, "time_ids": sdxl_time_ids(h, w, len(idx), device)} if fam == "sdxl" else None
            return diffusion_loss(unet, sched, weights, latents[idx], states, g, added, cells=None if cells is None else cells[idx])

    def keep_other_rows() -> None:
        with torch.no_grad():
            for table, original, ids in zip(tables, originals, rows):
                mask = torch.ones(len(table), dtype=torch.bool, device=table.device)
                mask[ids] = False
                table[mask] = original[mask]

    unet.requires_grad_(False)  # the user's UNet: gradients flow through it, none are kept
    try:
        info = train_loop(out, cfg, tables, loss, lambda: {f"table{i}": t.detach()[r].clone() for i, (t, r) in enumerate(zip(tables, rows))},
                          lambda d: _load_rows(tables, rows, d), keep_other_rows, callback, progress, "embedding")
    finally:
        for p, flag in zip(unet.parameters(), frozen_unet):
            p.requires_grad_(flag)
    vectors = [t.detach()[r].float().cpu().clone() for t, r in zip(tables, rows)]
    return Embedding(token, vectors, {**info, "method": "embedding", "init_word": init_word, "num_vectors": cfg.num_vectors})


def _load_rows(tables, rows, saved: dict) -> None:
    with torch.no_grad():
        for i, (table, ids) in enumerate(zip(tables, rows)):
            table[ids] = saved[f"table{i}"].to(table.dtype)
