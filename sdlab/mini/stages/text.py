"""The text encoder's stage: pretrain it to read every attribute a caption names, then freeze it.

SD trains its UNet against a frozen, pretrained CLIP text encoder. Trained
jointly from scratch instead, ours collapsed onto what the young UNet used
first: its states for different positions ("at the top left", "at the bottom
right") became almost the same, and position never became learnable. Here a
linear head per attribute (value, or "not named") reads the encoder's states,
where ``cfg.text_reads`` says:

- ``"end"``: every state from end-of-text on, the 60-odd positions the UNet's
  cross-attention mostly attends to; empty captions (CFG's unconditional
  input) are mixed in, labelled "not named". The meaning then lives in the
  end-of-text states, and A1111 weighting, which scales a word's own state,
  barely acts.
- ``"words"`` (the default, the shipped model): the mean of the caption's word
  states, while a second loss pulls every end-of-text state onto the empty
  prompt's, so the UNet must attend to "red" to draw red and weighting acts.
  It needs a longer UNet run than "end" to reach the same accuracy.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...trainlog import append_log
from ...progress import Callback, report
from .. import model as model_lib
from .. import tokenizer as tokenizer_lib
from .. import world
from ..config import TrainConfig
from ...schedules import cosine, warmup
from .common import TEXT_STAGE, step_generator

ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "shape": world.SHAPES, "colour": tuple(world.COLOURS), "size": world.SIZES,
    "position": tuple(world.POSITIONS), "background": tuple(world.BACKGROUNDS),
}


def caption_labels(captions: list[str]) -> torch.Tensor:
    """(n, 5) class index per attribute that each caption names; ``len(values)`` where it names none."""
    rows = []
    for text in captions:
        named = world.parse_caption(text)
        rows.append([values.index(named[a]) if a in named else len(values) for a, values in ATTRIBUTE_VALUES.items()])
    return torch.tensor(rows, dtype=torch.long)


def token_ids(tok, captions: list[str]) -> torch.Tensor:
    """(n, 77) token ids of ``captions``, padded as the pipeline pads a prompt."""
    return torch.tensor(tok(captions, padding="max_length", max_length=tokenizer_lib.MAX_LENGTH, truncation=True).input_ids)


def _first_eos(ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """(b,) position of each caption's first end-of-text token."""
    return (ids == eos_token_id).int().argmax(dim=1)


def word_positions(ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """(b, 77) True at the caption's own tokens: after start-of-text, before the first end-of-text."""
    position = torch.arange(ids.shape[1])[None, :]
    return (position >= 1) & (position < _first_eos(ids, eos_token_id)[:, None])


def _text_losses(text, heads, ids: torch.Tensor, labels: torch.Tensor, empty_ids: torch.Tensor, eos_token_id: int, reads: str):
    """Attribute cross-entropy, the end-of-text states' distance from the empty prompt's, and one pooled state per caption.

    ``reads="end"``: every state from the first end-of-text on predicts the attributes (pooled: the first
    end-of-text state). ``reads="words"``: the mean of the caption's word states does.
    """
    hidden = text(ids).last_hidden_state  # (b, 77, width)
    empty = text(empty_ids).last_hidden_state  # (1, 77, width)
    words = word_positions(ids, eos_token_id)
    end = ~words
    end[:, 0] = False  # start-of-text sees only itself: already the same for every caption
    end_distance = (hidden - empty).pow(2)[end].mean() / empty.detach()[0, 1:].pow(2).mean()
    if reads == "words":
        pooled = (hidden * words[..., None]).sum(1) / words.sum(1, keepdim=True).clamp(min=1)
        attribute = sum(F.cross_entropy(head(pooled), labels[:, i]) for i, head in enumerate(heads.values())) / len(heads)
    else:
        states, targets = hidden[end], labels[:, None, :].expand(-1, ids.shape[1], -1)[end]
        attribute = sum(F.cross_entropy(head(states), targets[:, i]) for i, head in enumerate(heads.values())) / len(heads)
        pooled = hidden[torch.arange(len(ids)), _first_eos(ids, eos_token_id)]
    return attribute, end_distance, pooled


def pretrain_text_encoder(out: Path, captions: list[str], tok, cfg: TrainConfig, progress: bool = True,
                          callback: Callback | None = None):
    """Teach the text encoder to read every attribute a caption names (see the module's docstring); saved to ``out/text_encoder``.

    Short (a few minutes), so a killed run redoes this stage rather than resuming it.
    """
    from transformers import CLIPTextModel

    final = out / "text_encoder"
    if (final / "config.json").exists():
        return CLIPTextModel.from_pretrained(final)
    torch.manual_seed(cfg.seed)
    text = model_lib.build_text_encoder(cfg.model, tok)
    heads = torch.nn.ModuleDict({a: torch.nn.Linear(cfg.model.text_width, len(v) + 1) for a, v in ATTRIBUTE_VALUES.items()})
    params = list(text.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.text_lr, weight_decay=0.01)
    ids, labels = token_ids(tok, captions), caption_labels(captions)
    empty_ids, empty_labels = token_ids(tok, [""]), caption_labels([""])
    bar = tqdm(range(cfg.text_steps), desc="text", disable=not progress)
    text.train()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = cfg.text_lr * warmup(step, 100) * cosine(step, cfg.text_steps, 0.1)
        g = step_generator(cfg.seed, TEXT_STAGE, step)
        idx = torch.randint(len(ids), (cfg.text_batch,), generator=g)
        batch_ids, batch_labels = ids[idx].clone(), labels[idx].clone()
        if cfg.text_reads == "end":
            drop = torch.rand(cfg.text_batch, generator=g) < cfg.cfg_dropout
            batch_ids[drop], batch_labels[drop] = empty_ids, empty_labels
        attribute, end_distance, _ = _text_losses(text, heads, batch_ids, batch_labels, empty_ids, tok.eos_token_id, cfg.text_reads)
        loss = attribute + cfg.text_end_weight * end_distance if cfg.text_reads == "words" else attribute
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(attribute=f"{attribute.item():.4f}", end=f"{end_distance.item():.4f}")
        if step % 50 == 0:
            append_log(out, {"stage": "text", "step": step, "loss": attribute.item(), "end_distance": end_distance.item(), "time": time.time()})
        report(callback, step + 1, cfg.text_steps, lambda _: None)  # short: a cancelled stage is redone
    text.eval().requires_grad_(False)
    with torch.no_grad():  # held-out check on fresh captions, logged for the closing note
        _, check_meta = world.make_dataset(512, seed=cfg.seed + 1)
        check = check_meta["TEXT"].tolist()
        check_labels = caption_labels(check)
        _, end_distance, pooled = _text_losses(text, heads, token_ids(tok, check), check_labels, empty_ids, tok.eos_token_id, cfg.text_reads)
        accuracy = {a: float((heads[a](pooled).argmax(1) == check_labels[:, i]).float().mean()) for i, a in enumerate(heads)}
    append_log(out, {"stage": "text_done", "heldout_accuracy": accuracy, "heldout_end_distance": end_distance.item(), "time": time.time()})
    text.save_pretrained(final, safe_serialization=True)
    return text
