"""AUTOMATIC1111 prompt weighting -> text-encoder embeddings.

Syntax (REFERENCE.md): ``(text)`` x1.1, ``((text))`` x1.21, ``[text]`` /1.1,
``(text:1.5)`` an explicit weight, ``\\(`` and ``\\)`` literal brackets, and
``BREAK`` to start a new 75-token chunk. Prompts longer than 75 tokens are
encoded in 75-token chunks (each with its own BOS/EOS) and concatenated, as
A1111 does. Weights scale each token's embedding, then the chunk's mean is
restored so weighting shifts emphasis without changing the overall scale.

:func:`parse` follows A1111's ``parse_prompt_attention`` (modules/prompt_parser.py).
"""
from __future__ import annotations

import re
from typing import Any

from .errors import ValidationError

CHUNK = 75  # tokens of text per chunk; +BOS +EOS = the encoder's 77
_ATTENTION = re.compile(
    r"""\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:""",
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
UP, DOWN = 1.1, 1 / 1.1


def parse(text: str) -> list[tuple[str, float]]:
    """Split ``text`` into (fragment, weight) runs; ``BREAK`` becomes ``("BREAK", -1)``."""
    result: list[list[Any]] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for pos in range(start, len(result)):
            result[pos][1] *= multiplier

    for m in _ATTENTION.finditer(text):
        token, weight = m.group(0), m.group(1)
        if token.startswith("\\"):
            result.append([token[1:], 1.0])
        elif token == "(":
            round_brackets.append(len(result))
        elif token == "[":
            square_brackets.append(len(result))
        elif weight is not None and round_brackets:
            try:
                multiply_range(round_brackets.pop(), float(weight))
            except ValueError:
                raise ValidationError(f"prompt: {weight!r} in {token!r} is not a number") from None
        elif token == ")" and round_brackets:
            multiply_range(round_brackets.pop(), UP)
        elif token == "]" and square_brackets:
            multiply_range(square_brackets.pop(), DOWN)
        else:
            parts = _BREAK.split(token)
            for i, part in enumerate(parts):
                if i > 0:
                    result.append(["BREAK", -1.0])
                result.append([part, 1.0])
    for pos in round_brackets:  # unclosed brackets still count, as in A1111
        multiply_range(pos, UP)
    for pos in square_brackets:
        multiply_range(pos, DOWN)
    if not result:
        result = [["", 1.0]]
    merged: list[list[Any]] = []  # join neighbours of equal weight
    for fragment, w in result:
        if merged and merged[-1][1] == w and w != -1:
            merged[-1][0] += fragment
        else:
            merged.append([fragment, w])
    return [(f, float(w)) for f, w in merged]


def tokenize_weighted(tokenizer, text: str) -> list[list[tuple[int, float]]]:
    """Token ids with weights, split into chunks of at most 75 (``BREAK`` starts a new one)."""
    chunks: list[list[tuple[int, float]]] = [[]]
    for fragment, weight in parse(text):
        if weight == -1:
            if chunks[-1]:
                chunks.append([])
            continue
        ids = tokenizer(fragment, add_special_tokens=False, truncation=False).input_ids
        for token_id in ids:
            if len(chunks[-1]) == CHUNK:
                chunks.append([])
            chunks[-1].append((token_id, weight))
    return chunks


def _encode_chunks(pipe, chunks: list[list[tuple[int, float]]], clip_skip: int):
    """Encode each chunk padded to 77 tokens; scale by weights; restore the mean; concatenate."""
    import torch

    tok, encoder = pipe.tokenizer, pipe.text_encoder
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    device = encoder.device
    outputs = []
    for chunk in chunks:
        ids = [bos] + [t for t, _ in chunk] + [eos]
        ids += [pad] * (CHUNK + 2 - len(ids))
        weights = [1.0] + [w for _, w in chunk] + [1.0] * (CHUNK + 2 - len(chunk) - 1)
        input_ids = torch.tensor([ids], device=device)
        with torch.no_grad():
            if clip_skip > 1:
                hidden = encoder(input_ids, output_hidden_states=True).hidden_states[-clip_skip]
                hidden = encoder.text_model.final_layer_norm(hidden)
            else:
                hidden = encoder(input_ids).last_hidden_state
        w = torch.tensor(weights, device=device, dtype=hidden.dtype)[None, :, None]
        original_mean = hidden.mean()
        hidden = hidden * w
        hidden = hidden * (original_mean / hidden.mean())
        outputs.append(hidden)
    return torch.cat(outputs, dim=1)


def encode_prompts(pipe, prompt: str, negative_prompt: str, batch: int, clip_skip: int = 1) -> dict:
    """Pipeline keyword arguments for ``prompt``/``negative_prompt`` with A1111 weighting.

    For single-CLIP models (SD 1.x/2.x, the shapes world) this returns
    ``prompt_embeds``/``negative_prompt_embeds``; for others (SDXL, SD3: two or
    three encoders) it hands the plain text to the pipeline, and weighting
    syntax is passed through unparsed.
    """
    if getattr(pipe, "text_encoder_2", None) is not None or getattr(pipe, "tokenizer", None) is None:
        return {"prompt": [prompt] * batch, "negative_prompt": [negative_prompt] * batch}
    chunks = tokenize_weighted(pipe.tokenizer, prompt)
    negative_chunks = tokenize_weighted(pipe.tokenizer, negative_prompt)
    while len(negative_chunks) < len(chunks):  # both sides need the same length for CFG
        negative_chunks.append([])
    while len(chunks) < len(negative_chunks):
        chunks.append([])
    positive = _encode_chunks(pipe, chunks, clip_skip)
    negative = _encode_chunks(pipe, negative_chunks, clip_skip)
    return {
        "prompt_embeds": positive.expand(batch, -1, -1).contiguous(),
        "negative_prompt_embeds": negative.expand(batch, -1, -1).contiguous(),
    }
