"""AUTOMATIC1111 prompt weighting -> text-encoder embeddings, for every CLIP-conditioned family.

Syntax (REFERENCE.md): ``(text)`` x1.1, ``((text))`` x1.21, ``[text]`` /1.1,
``(text:1.5)`` an explicit weight, ``\\(`` and ``\\)`` literal brackets, and
``BREAK`` to start a new 75-token chunk. Prompts longer than 75 tokens are
encoded in 75-token chunks (each with its own BOS/EOS, padded to 77 with the
tokenizer's own pad token) and concatenated along the sequence, as A1111 does:
a 100-token prompt gives 154 positions, never a silent cut. Weights scale each
token's embedding, then the chunk's mean is restored so weighting shifts
emphasis without changing the overall scale. The negative prompt gets as many
chunks as the prompt (empty ones appended), so both sides of CFG match.

Per family (:func:`text_family`), with ``clip_skip`` as A1111 counts it (1 =
the model's usual layer; each step back one more layer; this is diffusers'
``clip_skip`` + 1):

- ``clip`` (SD 1.x/2.x, the shapes world): one CLIP encoder; clip skip k uses
  hidden layer -k through the final layer norm. Returns ``prompt_embeds`` and
  ``negative_prompt_embeds``.
- ``sdxl``: both CLIP encoders per chunk, penultimate layer (clip skip k: layer
  -(k+1)), concatenated along the features, as diffusers' SDXL
  ``encode_prompt``; the pooled embedding is the second encoder's projected
  output for the *first* chunk, unweighted (as A1111 and compel). An empty
  negative prompt gives zeros when the pipeline's ``force_zeros_for_empty_prompt``
  says so (diffusers' default call and A1111 both do). Also returns
  ``pooled_prompt_embeds`` and ``negative_pooled_prompt_embeds``.
- ``sd3``: its two CLIP encoders the same way (pooled: both first-chunk
  projections concatenated), padded to T5's width; then T5's long context
  appended along the sequence, as diffusers' SD3 ``encode_prompt``. T5 reads
  the whole prompt in one sequence (``BREAK`` is dropped) with the A1111
  weights applied **per T5 token** and the same mean restoration; it is padded
  to 256 tokens as diffusers does, to 512 when the prompt needs it, and a
  longer prompt is refused. A pipeline loaded without T5 gets zeros there.

Unlike diffusers' ``encode_prompt``, which skips layers for the prompt only,
clip skip applies to the negative prompt too (as A1111). A pipeline of another
kind gets plain text; weighting syntax for it is refused with one line rather
than passed on as literal brackets.

:func:`parse` follows A1111's ``parse_prompt_attention`` (modules/prompt_parser.py).
"""
from __future__ import annotations

import re
import weakref
from typing import Any

from .errors import ValidationError
from .validation import invalid

CHUNK = 75  # tokens of text per chunk; +BOS +EOS = the encoder's 77
T5_LENGTHS = (256, 512)  # SD 3's T5 context: diffusers' default, and the most it takes
_ATTENTION = re.compile(
    r"""\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:""",
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
UP, DOWN = 1.1, 1 / 1.1
FAMILIES = ("clip", "sdxl", "sd3")
SUPPORTED = "SD 1.x/2.x, SDXL and SD 3 (CLIP text encoders)"


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


def plain_text(text: str) -> str:
    """``text`` with the weighting syntax removed (escaped brackets kept as brackets, ``BREAK`` as a space)."""
    return "".join(" " if w == -1 else f for f, w in parse(text))


def is_weighted(text: str) -> bool:
    """Whether ``text`` uses weights or ``BREAK`` (escaped brackets alone are plain text)."""
    return any(w != 1.0 for _, w in parse(text))


_GROUPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # tokenizer -> {first id: run length}


def keep_together(tokenizer, groups: dict[int, int]) -> None:
    """Runs of token ids never split across chunks: ``{first id: length}`` (a textual-inversion embedding's
    vectors, which A1111 moves whole to the next chunk when they do not fit; see :mod:`sdlab.adapters.apply`)."""
    _GROUPS[tokenizer] = dict(groups)


def tokenize_weighted(tokenizer, text: str) -> list[list[tuple[int, float]]]:
    """Token ids with weights, split into chunks of at most 75 (``BREAK`` starts a new one)."""
    groups = _GROUPS.get(tokenizer, {})
    chunks: list[list[tuple[int, float]]] = [[]]
    for fragment, weight in parse(text):
        if weight == -1:
            if chunks[-1]:
                chunks.append([])
            continue
        ids = tokenizer(fragment, add_special_tokens=False, truncation=False, verbose=False).input_ids
        k = 0
        while k < len(ids):
            run = min(groups.get(ids[k], 1), CHUNK)
            if len(chunks[-1]) + run > CHUNK:
                chunks.append([])
            chunks[-1].extend((token_id, weight) for token_id in ids[k : k + run])
            k += run
    return chunks


def text_family(pipe) -> str | None:
    """``clip``, ``sdxl`` or ``sd3``: how ``pipe`` encodes text (None: a kind sdlab does not weight)."""
    components = getattr(pipe, "components", None) or {}

    def kind(name: str) -> str:
        return type(components.get(name)).__name__

    if "text_encoder_3" in components:
        clips = kind("text_encoder") == kind("text_encoder_2") == "CLIPTextModelWithProjection"
        return "sd3" if clips and kind("text_encoder_3") in ("T5EncoderModel", "NoneType") else None
    if "text_encoder_2" in components:
        ok = kind("text_encoder_2") == "CLIPTextModelWithProjection" and kind("text_encoder") in ("CLIPTextModel", "NoneType")
        return "sdxl" if ok else None
    if components.get("tokenizer") is not None and kind("text_encoder") == "CLIPTextModel":
        return "clip"
    return None


def _device(module):
    try:
        from diffusers.utils.torch_utils import get_module_execution_device
    except ImportError:  # older diffusers
        return module.device
    return get_module_execution_device(module)


def _final_layer_norm(encoder):
    """CLIP's final layer norm: on the model itself in transformers 5, under ``text_model`` before."""
    norm = getattr(encoder, "final_layer_norm", None)
    return norm if norm is not None else encoder.text_model.final_layer_norm


def _emphasise(hidden, weights):
    """Scale each position by its weight, then restore the mean (A1111's "Original" emphasis).

    Unweighted chunks are returned as they are, and a weighted one whose mean
    is 0 (a layer norm's output, as after clip skip) only scaled: the ratio of
    means would be 0/0.
    """
    import torch

    if all(w == 1.0 for w in weights):
        return hidden
    w = torch.tensor(weights, device=hidden.device, dtype=hidden.dtype)[None, :, None]
    original_mean = hidden.mean()
    hidden = hidden * w
    new_mean = hidden.mean()
    return hidden * (original_mean / new_mean) if new_mean != 0 else hidden


def _check_clip_skip(encoder, clip_skip: int, penultimate: bool) -> None:
    layers = encoder.config.num_hidden_layers
    most = layers - 1 if penultimate else layers
    if not 1 <= clip_skip <= most:
        raise invalid("clip_skip", clip_skip, f"1 to {most} for this model's text encoder ({layers} layers)")


def _encode_chunks(tokenizer, encoder, chunks: list[list[tuple[int, float]]], clip_skip: int, penultimate: bool = False):
    """Encode each chunk padded to 77 tokens; weight it; concatenate. Also the first chunk's pooled output.

    ``penultimate`` (SDXL, SD 3): hidden layer -(clip_skip + 1), no final norm;
    otherwise (SD 1.x/2.x) the last layer, or layer -clip_skip through the final norm.
    """
    import torch

    _check_clip_skip(encoder, clip_skip, penultimate)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    device = _device(encoder)
    outputs, pooled = [], None
    for chunk in chunks:
        ids = [bos] + [t for t, _ in chunk] + [eos]
        ids += [pad] * (CHUNK + 2 - len(ids))
        weights = [1.0] + [w for _, w in chunk] + [1.0] * (CHUNK + 2 - len(chunk) - 1)
        input_ids = torch.tensor([ids], device=device)
        with torch.no_grad():
            if penultimate:
                out = encoder(input_ids, output_hidden_states=True)
                hidden = out.hidden_states[-(clip_skip + 1)]
            elif clip_skip > 1:
                out = encoder(input_ids, output_hidden_states=True)
                hidden = _final_layer_norm(encoder)(out.hidden_states[-clip_skip])
            else:
                out = encoder(input_ids)
                hidden = out.last_hidden_state
        if pooled is None:
            pooled = getattr(out, "text_embeds", None)
        outputs.append(_emphasise(hidden, weights))
    return torch.cat(outputs, dim=1), pooled


def _clip_sides(pairs, prompt: str, negative_prompt: str, clip_skip: int, penultimate: bool):
    """For the prompt and the negative: each encoder's (embeddings, pooled), all with one chunk count."""
    sides = [[tokenize_weighted(tok, text) for tok, _ in pairs] for text in (prompt, negative_prompt)]
    n = max(len(chunks) for side in sides for chunks in side)
    return [
        [_encode_chunks(tok, enc, chunks + [[]] * (n - len(chunks)), clip_skip, penultimate) for (tok, enc), chunks in zip(pairs, side)]
        for side in sides
    ]


def _t5_tokens(tokenizer, text: str) -> list[tuple[int, float]]:
    """T5 token ids with A1111 weights for the whole prompt (``BREAK`` dropped), ending with EOS."""
    tokens = []
    for fragment, weight in parse(text):
        if weight != -1:
            tokens += [(t, weight) for t in tokenizer(fragment, add_special_tokens=False, verbose=False).input_ids]
    return tokens + [(tokenizer.eos_token_id, 1.0)]


def _t5_embeds(pipe, prompt: str, negative_prompt: str) -> list:
    """SD 3's T5 context for both prompts, weighted per token, padded to one common length."""
    import torch

    tokenizer, encoder = pipe.tokenizer_3, pipe.text_encoder_3
    if encoder is None:  # loaded without T5, as diffusers allows: zeros in its place
        width = pipe.transformer.config.joint_attention_dim
        return [torch.zeros(1, T5_LENGTHS[0], width, device=_device(pipe.text_encoder), dtype=pipe.text_encoder.dtype)] * 2
    sides = [(text, _t5_tokens(tokenizer, text)) for text in (prompt, negative_prompt)]
    longest = max(len(tokens) for _, tokens in sides)
    length = next((n for n in T5_LENGTHS if longest <= n), None)
    if length is None:
        text = max(sides, key=lambda s: len(s[1]))[0]
        raise invalid("prompt", text, f"at most {T5_LENGTHS[-1]} T5 tokens for SD 3's T5 encoder (this one has {longest})")
    out = []
    for _, tokens in sides:
        ids = [t for t, _ in tokens] + [tokenizer.pad_token_id] * (length - len(tokens))
        weights = [w for _, w in tokens] + [1.0] * (length - len(tokens))
        with torch.no_grad():
            hidden = encoder(torch.tensor([ids], device=_device(encoder)))[0]
        out.append(_emphasise(hidden, weights))
    return out


def _sdxl(pipe, prompt: str, negative_prompt: str, clip_skip: int) -> dict:
    import torch

    pairs = [(t, e) for t, e in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)) if e is not None]
    positive, negative = _clip_sides(pairs, prompt, negative_prompt, clip_skip, penultimate=True)
    dtype, device = pipe.text_encoder_2.dtype, _device(pipe.text_encoder_2)
    embeds = [torch.cat([h for h, _ in side], dim=-1).to(dtype=dtype, device=device) for side in (positive, negative)]
    pooled = [side[-1][1].to(dtype=dtype, device=device) for side in (positive, negative)]
    if negative_prompt == "" and pipe.config.get("force_zeros_for_empty_prompt", False):
        embeds[1], pooled[1] = torch.zeros_like(embeds[0]), torch.zeros_like(pooled[0])
    return {"prompt_embeds": embeds[0], "negative_prompt_embeds": embeds[1],
            "pooled_prompt_embeds": pooled[0], "negative_pooled_prompt_embeds": pooled[1]}


def _sd3(pipe, prompt: str, negative_prompt: str, clip_skip: int) -> dict:
    import torch

    pairs = [(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)]
    clip_sides = _clip_sides(pairs, prompt, negative_prompt, clip_skip, penultimate=True)
    dtype, device = pipe.text_encoder.dtype, _device(pipe.text_encoder)
    result = []
    for side, t5 in zip(clip_sides, _t5_embeds(pipe, prompt, negative_prompt)):
        clip = torch.cat([h for h, _ in side], dim=-1).to(dtype=dtype, device=device)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        result.append((torch.cat([clip, t5.to(dtype=dtype, device=device)], dim=-2),
                       torch.cat([p for _, p in side], dim=-1).to(dtype=dtype, device=device)))
    (embeds, pooled), (negative_embeds, negative_pooled) = result
    return {"prompt_embeds": embeds, "negative_prompt_embeds": negative_embeds,
            "pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": negative_pooled}


def _clip(pipe, prompt: str, negative_prompt: str, clip_skip: int) -> dict:
    (positive,), (negative,) = _clip_sides([(pipe.tokenizer, pipe.text_encoder)], prompt, negative_prompt, clip_skip, penultimate=False)
    return {"prompt_embeds": positive[0], "negative_prompt_embeds": negative[0]}


_ENCODERS = {"clip": _clip, "sdxl": _sdxl, "sd3": _sd3}


def encode_prompts(pipe, prompt: str, negative_prompt: str, batch: int, clip_skip: int = 1) -> dict:
    """Pipeline keyword arguments for ``prompt``/``negative_prompt`` with A1111 weighting, ``batch`` copies.

    ``prompt_embeds``/``negative_prompt_embeds`` for every CLIP family, plus the
    two pooled embeddings for SDXL and SD 3 (see the module docstring). Any
    other pipeline gets ``prompt``/``negative_prompt`` as plain text; weighting
    syntax or ``clip_skip`` > 1 for it raises :class:`ValidationError`.
    """
    family = text_family(pipe)
    if family is None:
        name = type(pipe).__name__
        for label, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
            if is_weighted(text):
                raise invalid(label, text, f"plain text for {name}: A1111 weighting and BREAK work with {SUPPORTED}")
        if clip_skip != 1:
            raise invalid("clip_skip", clip_skip, f"1 for {name}: clip skip works with {SUPPORTED}")
        return {"prompt": [plain_text(prompt)] * batch, "negative_prompt": [plain_text(negative_prompt)] * batch}
    embeds = _ENCODERS[family](pipe, prompt, negative_prompt, clip_skip)
    return {key: value.expand(batch, *value.shape[1:]).contiguous() for key, value in embeds.items()}
