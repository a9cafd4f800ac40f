"""Fine-tuning by end users on the shapes world: method x concept, one evaluation for all, beside the issue's targets.

Each cell trains one method on one concept's fine-tuning set (20 images unless the cell says up to
50, always 4 of 8 colours and 6 of 9 positions), saves its file, and measures with the shapes world's checker:

- success under the trigger on prompts like the set (``seen``) and with colours/positions it never
  showed (``held_out``);
- forgetting: all-five accuracy on the world's fixed evaluation prompts with the method applied,
  beside the base model's (a token no prompt contains cannot change them: textual inversion's is
  the base figure by construction), and the class word without the trigger (DreamBooth's language
  drift: the share of "a ... cross" prompts still drawn as crosses);
- the data-quality effect: the same LoRA run on the set shrunk to 16x16 and upscaled back;
- what keeps the base model: prior preservation (class images, the noise as target) and output
  preservation (``preserve``: the base UNet's own predictions as target, :mod:`sdlab.finetune.preserve`);
- LoRA and hypernetwork strength sweeps 0 -> 1.5; training minutes (with the load average: the CPU
  is shared) and file size.

Cells are resumable (training checkpoints, finished cells cached in ``OUT/results.jsonl``), so the
script can be killed and rerun. ``--cells`` picks some; ``--quick`` shrinks everything (a smoke run).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))

from sdlab.finetune import evaluate, preserve  # noqa: E402
from sdlab.finetune.common import Dataset  # noqa: E402
from sdlab.mini import checker, concepts, world  # noqa: E402
from sdlab.models import load_pipeline  # noqa: E402

ALL_WB = ["world", "world-blank", "class-word", "blank"]  # output preservation on every kind but class-images
# name: (method, concept, data, extra)
CELLS = {
    "embedding-sun": ("embedding", "sun", "clean", {}),
    "embedding-star": ("embedding", "star", "clean", {}),
    "embedding-outlined": ("embedding", "outlined", "clean", {}),
    "lora-star": ("lora", "star", "clean", {}),
    "lora-sun": ("lora", "sun", "clean", {}),
    "lora-outlined": ("lora", "outlined", "clean", {}),
    "lora-star-lowres": ("lora", "star", "lowres", {}),
    "lora-star-size96": ("lora", "star", "size96", {}),
    "lora-star-attention": ("lora", "star", "clean", {"targets": "attention"}),
    "hypernetwork-outlined": ("hypernetwork", "outlined", "clean", {}),
    "hypernetwork-star": ("hypernetwork", "star", "clean", {}),
    "hypernetwork-outlined-lr1e-2": ("hypernetwork", "outlined", "clean", {"lr": 1e-2}),
    "dreambooth-star-prior": ("dreambooth", "star", "clean", {"prior_weight": 1.0}),
    "dreambooth-star-noprior": ("dreambooth", "star", "clean", {"prior_weight": 0.0}),
    # prior preservation on the base model's images of general prompts (all shapes), not only the class word's
    "dreambooth-star-prior-general": ("dreambooth", "star", "clean", {"prior_weight": 1.0, "class_images": "general"}),
    "dreambooth-star-prior-lr2e-4": ("dreambooth", "star", "clean", {"prior_weight": 1.0, "lr": 2e-4}),
    "dreambooth-star-prior-lr1e-4": ("dreambooth", "star", "clean", {"prior_weight": 1.0, "lr": 1e-4}),
    # class images weighted as the subject's are: their shape's latent cells 13x (masks from the same foreground reading)
    "dreambooth-star-prior-masked": ("dreambooth", "star", "clean", {"prior_weight": 1.0, "class_masks": True}),
    "dreambooth-star-prior-masked-both": ("dreambooth", "star", "clean", {"prior_weight": 1.0, "class_masks": True, "class_images": "both",
                                                                          "n_class": 80}),
    "embedding-sun-600": ("embedding", "sun", "clean", {"steps": 600}),
    "lora-star-lr1e-3": ("lora", "star", "clean", {"lr": 1e-3}),
    # kohya's regularisation images: the base model's class images in a prior-preservation loss beside the LoRA's
    "lora-star-prior": ("lora", "star", "clean", {"prior_weight": 1.0}),
    "lora-star-prior-lr1e-3": ("lora", "star", "clean", {"prior_weight": 1.0, "lr": 1e-3}),
    "lora-star-prior-both": ("lora", "star", "clean", {"prior_weight": 1.0, "class_images": "both", "n_class": 80}),
    # the search for the quality targets with the time left (up to 50 images, more steps, lower lr)
    "lora-star-50-1200": ("lora", "star", "clean", {"images": 50, "lr": 1e-3, "steps": 1200}),
    "lora-star-50": ("lora", "star", "clean", {"images": 50}),
    "lora-star-b16": ("lora", "star", "clean", {"batch": 16}),
    "lora-star-b16-800": ("lora", "star", "clean", {"batch": 16, "steps": 800}),
    "lora-star-b16-lr3e-3": ("lora", "star", "clean", {"batch": 16, "lr": 3e-3}),
    "lora-star-50-b16-600": ("lora", "star", "clean", {"images": 50, "batch": 16, "steps": 600}),
    "lora-star-50-b32": ("lora", "star", "clean", {"images": 50, "batch": 32}),
    "lora-star-te": ("lora", "star", "clean", {"train_text_encoder": True, "lr": 1e-3}),
    "dreambooth-star-prior-50-1200": ("dreambooth", "star", "clean", {"images": 50, "lr": 1e-4, "steps": 1200, "prior_weight": 1.0,
                                                                       "class_images": "both", "n_class": 80}),
    "dreambooth-star-prior3-lr2e-4": ("dreambooth", "star", "clean", {"lr": 2e-4, "prior_weight": 3.0, "class_images": "both", "n_class": 80}),
    # replay: many base-model images of every shape (and the class word) beside the subject, to hold the base accuracy
    "lora-star-replay": ("lora", "star", "clean", {"prior_weight": 1.0, "class_images": "both", "n_class": 240, "class_batch": 8,
                                                   "lr": 1e-3, "steps": 800}),
    "lora-star-replay-w3": ("lora", "star", "clean", {"prior_weight": 3.0, "class_images": "both", "n_class": 240, "class_batch": 8,
                                                      "lr": 1e-3, "steps": 800}),
    # caption dropout as the base model was trained (10% empty prompts): CFG's unconditional prediction keeps step
    "lora-star-cd": ("lora", "star", "clean", {"caption_dropout": 0.1}),
    "lora-star-cd-prior-both": ("lora", "star", "clean", {"caption_dropout": 0.1, "prior_weight": 1.0, "class_images": "both", "n_class": 80}),
    # the recipe's own cost: a LoRA trained on 200 of the world's own training images (what the base model learned from),
    # measured by the base all-five accuracy alone (only the recipe can lose it here, no new concept)
    "lora-world": ("lora", "world", "clean", {"images": 200}),
    "lora-world-cd": ("lora", "world", "clean", {"images": 200, "caption_dropout": 0.1}),
    "lora-world-lr1e-3-cd": ("lora", "world", "clean", {"images": 200, "lr": 1e-3, "caption_dropout": 0.1}),
    "lora-world-lr5e-4": ("lora", "world", "clean", {"images": 200, "lr": 5e-4}),
    "lora-world-cd-cosine": ("lora", "world", "clean", {"images": 200, "caption_dropout": 0.1, "lr_scheduler": "cosine"}),
    # the learning rate that keeps the base model in the world cells, with the steps to learn the star at it
    "lora-star-lr5e-4-1200-cosine": ("lora", "star", "clean", {"lr": 5e-4, "steps": 1200, "lr_scheduler": "cosine"}),
    "lora-star-lr5e-4-1200-cosine-prior-both": ("lora", "star", "clean", {"lr": 5e-4, "steps": 1200, "lr_scheduler": "cosine",
                                                                          "prior_weight": 1.0, "class_images": "both", "n_class": 80}),
    "lora-star-cosine": ("lora", "star", "clean", {"lr_scheduler": "cosine"}),
    "lora-star-attention-cosine": ("lora", "star", "clean", {"targets": "attention", "lr_scheduler": "cosine"}),
    "lora-star-cosine-prior-both": ("lora", "star", "clean", {"lr_scheduler": "cosine", "prior_weight": 1.0, "class_images": "both", "n_class": 80}),
    "embedding-sun-50-600": ("embedding", "sun", "clean", {"images": 50, "steps": 600}),
    "embedding-sun-50-1200-v2": ("embedding", "sun", "clean", {"images": 50, "steps": 1200, "num_vectors": 2}),
    "embedding-ruby": ("embedding", "ruby", "clean", {}),
    "embedding-ruby-600": ("embedding", "ruby", "clean", {"steps": 600}),
    "embedding-ruby-50-600": ("embedding", "ruby", "clean", {"images": 50, "steps": 600}),
    # the reachable colour word through the weight-changing methods: what they cost when nothing new must be drawn
    "lora-ruby-cosine": ("lora", "ruby", "clean", {"lr_scheduler": "cosine"}),
    "dreambooth-ruby-prior": ("dreambooth", "ruby", "clean", {"prior_weight": 1.0}),
    "dreambooth-ruby-noprior": ("dreambooth", "ruby", "clean", {"prior_weight": 0.0}),
    "lora-ruby-lr5e-4-cosine": ("lora", "ruby", "clean", {"lr": 5e-4, "lr_scheduler": "cosine"}),
    # output preservation: the base model's own predictions as targets (not the noise) on what must not change
    "lora-star-cosine-keep-world": ("lora", "star", "clean", {"lr_scheduler": "cosine", "preserve": ["world"], "preserve_weight": 1.0,
                                                              "preserve_batch": 8}),
    "lora-star-cosine-keep-dop-blank": ("lora", "star", "clean", {"lr_scheduler": "cosine", "preserve": ["class-word", "blank"],
                                                                  "preserve_weight": 1.0, "preserve_batch": 8}),
    "lora-star-keep-world": ("lora", "star", "clean", {"preserve": ["world"], "preserve_weight": 1.0, "preserve_batch": 8}),
    "lora-star-cosine-keep-world-w3": ("lora", "star", "clean", {"lr_scheduler": "cosine", "preserve": ["world"], "preserve_weight": 3.0,
                                                                 "preserve_batch": 8}),
    "lora-star-cosine-keep-all": ("lora", "star", "clean", {"lr_scheduler": "cosine", "preserve": ["world", "class-word", "blank"],
                                                            "preserve_weight": 1.0, "preserve_batch": 8}),
    "dreambooth-star-keep-world": ("dreambooth", "star", "clean", {"prior_weight": 0.0, "preserve": ["world"], "preserve_weight": 1.0,
                                                                   "preserve_batch": 4}),
    "dreambooth-star-keep-all": ("dreambooth", "star", "clean", {"prior_weight": 0.0, "preserve": ["world", "class-word", "blank"],
                                                                 "preserve_weight": 1.0, "preserve_batch": 8}),
    "dreambooth-star-cosine-keep-all": ("dreambooth", "star", "clean", {"prior_weight": 0.0, "preserve": ["world", "class-word", "blank"],
                                                                        "preserve_weight": 1.0, "preserve_batch": 8, "lr_scheduler": "cosine"}),
    "lora-star-cosine-keep-all-800": ("lora", "star", "clean", {"lr_scheduler": "cosine", "preserve": ["world", "class-word", "blank"],
                                                                "preserve_weight": 1.0, "preserve_batch": 8, "steps": 800}),
    "lora-star-lr3e-3-cosine-keep-world": ("lora", "star", "clean", {"lr": 3e-3, "lr_scheduler": "cosine", "preserve": ["world"],
                                                                     "preserve_weight": 1.0, "preserve_batch": 8}),
    "lora-star-cosine-keep-world-pb16": ("lora", "star", "clean", {"lr_scheduler": "cosine", "preserve": ["world"], "preserve_weight": 1.0,
                                                                   "preserve_batch": 16}),
    "lora-star-attention-cosine-keep-all": ("lora", "star", "clean", {"targets": "attention", "lr_scheduler": "cosine",
                                                                      "preserve": ["world", "class-word", "blank"], "preserve_weight": 1.0,
                                                                      "preserve_batch": 8}),
    "lora-star-cosine-keep-all-1200": ("lora", "star", "clean", {"lr_scheduler": "cosine", "preserve": ["world", "class-word", "blank"],
                                                                 "preserve_weight": 1.0, "preserve_batch": 8, "steps": 1200}),
    "lora-ruby-cosine-keep-world": ("lora", "ruby", "clean", {"lr_scheduler": "cosine", "preserve": ["world"], "preserve_weight": 1.0,
                                                              "preserve_batch": 8}),
    "lora-star-b16-cosine-keep-all": ("lora", "star", "clean", {"lr_scheduler": "cosine", "preserve": ["world", "class-word", "blank"],
                                                                "preserve_weight": 1.0, "preserve_batch": 8, "batch": 16}),
    # the world's images under the empty prompt too (world-blank): CFG's unconditional branch on the base model's kind of image
    "lora-star-cosine-keep-all-wb": ("lora", "star", "clean", {"lr_scheduler": "cosine", "preserve": ALL_WB, "preserve_weight": 1.0,
                                                               "preserve_batch": 8}),
    "lora-star-cosine-keep-all-wb-w2": ("lora", "star", "clean", {"lr_scheduler": "cosine", "preserve": ALL_WB, "preserve_weight": 2.0,
                                                                  "preserve_batch": 8}),
    "lora-star-cosine-keep-all-wb-w3": ("lora", "star", "clean", {"lr_scheduler": "cosine", "preserve": ALL_WB, "preserve_weight": 3.0,
                                                                  "preserve_batch": 8}),
    "lora-star-cosine-keep-all-wb-w2-600": ("lora", "star", "clean", {"lr_scheduler": "cosine", "preserve": ALL_WB, "preserve_weight": 2.0,
                                                                      "preserve_batch": 8, "steps": 600}),
    # the heaviest preservation, trained 2.5x longer: does the star keep growing while the base model stays put?
    "lora-star-cosine-keep-all-wb-w3-1000": ("lora", "star", "clean", {"lr_scheduler": "cosine", "preserve": ALL_WB, "preserve_weight": 3.0,
                                                                       "preserve_batch": 8, "steps": 1000}),
    # and 10% of the subject's captions trained as the empty prompt, as the base model was (kohya's caption_dropout_rate)
    "lora-star-cosine-keep-all-wb-w2-cd": ("lora", "star", "clean", {"lr_scheduler": "cosine", "preserve": ALL_WB, "preserve_weight": 2.0,
                                                                     "preserve_batch": 8, "caption_dropout": 0.1}),
    # the same recipe under a trigger the base model draws no cross for (white "sks": triangles, squares, circles)
    "lora-star-sks-wb-w3": ("lora", "star", "clean", {"token": "sks", "lr_scheduler": "cosine", "preserve": ALL_WB,
                                                      "preserve_weight": 3.0, "preserve_batch": 8}),
    # DreamBooth (the whole UNet) with the LoRA's smallest-drop preservation
    "dreambooth-star-cosine-keep-all-wb-w3": ("dreambooth", "star", "clean", {"prior_weight": 0.0, "preserve": ALL_WB, "preserve_weight": 3.0,
                                                                              "preserve_batch": 8, "lr_scheduler": "cosine"}),
    "dreambooth-star-cosine-keep-all-wb-w3-lr2e-4": ("dreambooth", "star", "clean", {"lr": 2e-4, "prior_weight": 0.0, "preserve": ALL_WB,
                                                                                     "preserve_weight": 3.0, "preserve_batch": 8,
                                                                                     "lr_scheduler": "cosine"}),
}
STEPS = {"embedding": 300, "lora": 400, "hypernetwork": 400, "dreambooth": 400}
# What each method trains with here (the lab's defaults are for real SD; the 4M-parameter shapes world takes larger steps).
# mask_weight: the shape's latent cells weigh 13x, as the shipped model was trained (a small shape is ~2% of the image).
CONFIGS = {
    "embedding": dict(lr=5e-3, mask_weight=12.0),
    "lora": dict(lr=2e-3, rank=4, targets="attention+conv", mask_weight=12.0),
    "hypernetwork": dict(lr=1e-3, mask_weight=12.0),
    "dreambooth": dict(lr=5e-4, mask_weight=12.0),
}
# extra keys that are the cell's data, not its method's config: the trigger, fine-tuning images, class images and their prompts
NOT_CONFIG = ("token", "prior_weight", "class_images", "n_class", "images", "class_masks", "preserve")
TARGETS = {"minutes": {"embedding": 10, "lora": 10, "hypernetwork": 10, "dreambooth": 20}}


def concept_of(cname: str, extra: dict) -> concepts.Concept | None:
    """The cell's concept, with its trigger replaced where the cell names one (``token``)."""
    import dataclasses

    c = concepts.CONCEPTS.get(cname)
    return dataclasses.replace(c, token=extra["token"]) if c and "token" in extra else c


def trigger(method: str, c: concepts.Concept) -> str:
    if method == "hypernetwork" and c.kind == "style":
        return ""  # a hypernetwork has no trigger: it steers every prompt
    return f"{c.token} {c.class_word}".strip() if method == "dreambooth" else c.token


def class_set(pipe, cname: str, extra: dict, quick: bool) -> Dataset:
    """Prior preservation's class images, made by the base model: the class word's prompts, general prompts
    (every shape), or half of each; ``class_masks`` weighs their shapes' cells as the subject's are weighed."""
    from sdlab.finetune import dreambooth

    n_class = 4 if quick else extra.get("n_class", 40)
    prompts = concepts.class_prompts(cname, n_class)
    if extra.get("class_images") == "general":
        prompts = world.evaluation_prompts(n_class, seed=77)["prompt"].tolist()
    elif extra.get("class_images") == "both":  # half the class word's, half general prompts (every shape)
        prompts = prompts[:n_class // 2] + world.evaluation_prompts(n_class - n_class // 2, seed=77)["prompt"].tolist()
    made = dreambooth.class_images(pipe, prompts)
    return Dataset(made, prompts, concepts.shape_masks(made) if extra.get("class_masks") else None)


def train(pipe, name: str, out: Path, quick: bool):
    from sdlab.finetune import dreambooth, embedding, hypernetwork, lora

    method, cname, data_kind, extra = CELLS[name]
    c = concept_of(cname, extra)
    steps = 3 if quick else extra.get("steps", STEPS[method])
    if cname == "world":  # the base model's own training distribution, its alt-text captions
        images, meta = world.make_dataset(extra["images"], seed=5)
        table = meta
    else:
        images, table = concepts.make_set(cname, extra.get("images", 20), seed=0, trigger=trigger(method, c), size=96 if data_kind == "size96" else 64)
    masks = concepts.shape_masks(images)
    if data_kind == "lowres":
        images = concepts.degrade(images, 16)
    data, run = Dataset(images, table["TEXT"].tolist(), masks), out / name
    keep = None
    if extra.get("preserve"):  # output preservation's items (sdlab.finetune.preserve's kinds)
        world = set(preserve.WORLD_KINDS) & set(extra["preserve"])
        world_data = Dataset(*concepts.world_images(8 if quick else concepts.WORLD_PRESERVATION_IMAGES)) if world else None
        keep = preserve.preservation_data(extra["preserve"], data, trigger(method, c), c.class_word, world_data=world_data)
    fields = {**CONFIGS[method], **{k: v for k, v in extra.items() if k not in NOT_CONFIG}, "steps": steps}
    load = os.getloadavg()[0]
    if method == "embedding":
        result = embedding.train_embedding(pipe, data, c.token, c.init_word, run, embedding.EmbeddingConfig(**fields))
        path = result.save(run / "embedding.safetensors")
        make = lambda s: result.apply(pipe)  # noqa: E731
    elif method == "lora":
        prior = extra.get("prior_weight", 0.0)
        result = lora.train_lora(pipe, data, run, lora.LoraConfig(**fields, prior_weight=prior),
                                 class_data=class_set(pipe, cname, extra, quick) if prior > 0 else None, preserve_data=keep)
        path = result.save(run / "lora.safetensors")
        make = lambda s: result.apply(pipe, s)  # noqa: E731
    elif method == "hypernetwork":
        from sdlab.adapters import hypernetwork as hn_lib

        result = hypernetwork.train_hypernetwork(pipe, data, run, cname, hypernetwork.HypernetworkTrainConfig(**fields))
        path = hn_lib.save(result, run / f"{cname}.pt")
        result.info["seconds"] = result.info["run_seconds"]
        make = lambda s: hn_lib.with_hypernetwork(pipe, result, s)  # noqa: E731
    else:
        class_data = class_set(pipe, cname, extra, quick) if extra["prior_weight"] > 0 else None
        cfg = dreambooth.DreamBoothConfig(**fields, prior_weight=extra["prior_weight"])
        result = dreambooth.train_dreambooth(pipe, data, run, cfg, class_data, preserve_data=keep)
        path = run / "unet.safetensors"
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in result.unet.state_dict().items()}, str(path))
        make = lambda s: result.apply(pipe)  # noqa: E731
    info = {"config": {k: v for k, v in fields.items()}, "minutes": result.info["seconds"] / 60, "file_kb": evaluate.file_size(path) / 1024, "load_train_start": round(load, 2),
            "load_train_end": round(os.getloadavg()[0], 2), "steps": steps, "final_loss": result.info.get("loss") or result.info.get("run_loss")}
    return make, info


def _pipe_of(made):
    return getattr(made, "pipe", made)


def score_world(images, table):
    return checker.score(images, table)


REACHABLE = [name for name, c in concepts.CONCEPTS.items() if c.plain]  # concepts the world has words for (sun, ruby)


def ceiling(pipe, cname: str, n_eval: int) -> dict:
    """Concept right for the base model prompted with the world's own words in the token's place (``yellow circle``
    for the sun), on the concept's evaluation prompts: what textual inversion can reach at best, since it only
    finds what the model draws."""
    plain = concepts.CONCEPTS[cname].plain
    return {split: evaluate.share(evaluate.generate_table(pipe, concepts.evaluation_prompts(cname, plain, n_eval, split),
                                                          concepts.score), "concept_ok") for split in ("seen", "held_out")}


def paired_error(base_each: list | None, table: pd.DataFrame) -> dict:
    """The base drop's standard error from the prompts that changed (same prompts and seeds as the base run)."""
    if base_each is None:  # a base file from before the per-prompt results were kept
        return {}
    paired = evaluate.paired_drop(base_each, table["all_ok"].astype(bool))
    return {"base_drop_se": paired["se"], "base_lost": paired["lost"], "base_gained": paired["gained"]}


def measure(pipe, make, name: str, info: dict, n_eval: int, n_base: int, base_all: float, do_sweep: bool = True,
            base_each: list | None = None) -> dict:
    method, cname, data_kind, extra = CELLS[name]
    tuned = _pipe_of(make(1.0))
    if cname == "world":  # no concept: what the recipe alone costs the base model
        table = evaluate.generate_table(tuned, world.evaluation_prompts(n_base), score_world)
        row = {"cell": name, "method": method, "concept": cname, "kind": "world", "data": data_kind, **extra, **info,
               "base_all_five": evaluate.share(table, "all_ok"), "base_drop": base_all - evaluate.share(table, "all_ok"),
               **{f"base_{a}": evaluate.share(table, f"{a}_ok") for a in ("shape", "colour", "size", "position")},
               **paired_error(base_each, table)}
        row["load_measured"] = round(os.getloadavg()[0], 2)
        return row
    c = concept_of(cname, extra)
    row = {"cell": name, "method": method, "concept": cname, "kind": c.kind, "data": data_kind, **extra, **info}
    for split in ("seen", "held_out"):
        prompts = concepts.evaluation_prompts(cname, trigger(method, c), n_eval, split)
        table = evaluate.generate_table(tuned, prompts, concepts.score)
        row[f"success_{split}"] = evaluate.share(table, "concept_ok")
        row[f"all_ok_{split}"] = evaluate.share(table, "all_ok")
        if c.colour is None:  # which colours the concept reaches (held out: those the set never showed)
            row[f"success_{split}_by_colour"] = evaluate.share(table, "concept_ok", by="colour").round(3).to_dict()
    if method == "embedding":
        row["base_all_five"] = base_all  # no base prompt holds the token: the same images, bit for bit
    else:
        table = evaluate.generate_table(tuned, world.evaluation_prompts(n_base), score_world)
        row["base_all_five"] = evaluate.share(table, "all_ok")
        row.update(paired_error(base_each, table))
    row["base_drop"] = base_all - row["base_all_five"]
    if c.kind in ("new shape", "reachable subject") and method in ("dreambooth", "lora"):  # the class word is a shape
        prompts = pd.DataFrame([{"prompt": p, "seed": 500 + i, "shape": c.class_word, **world.parse_caption(p)}
                                for i, p in enumerate(concepts.class_prompts(cname, n_eval, seed=7))])
        table = evaluate.generate_table(tuned, prompts, concepts.score)
        row["class_word_kept"] = evaluate.share(table, "shape_ok")
    if do_sweep and method in ("lora", "hypernetwork") and data_kind == "clean" and cname in ("star", "outlined"):
        prompts = concepts.evaluation_prompts(cname, trigger(method, c), max(n_eval // 2, 4), "held_out")
        sweep = evaluate.strength_sweep(lambda s: _pipe_of(make(s)), prompts, concepts.score)
        row["strength_sweep"] = {f"{s:g}": round(v, 3) for s, v in zip(sweep["strength"], sweep["concept_ok"])}
    row["load_measured"] = round(os.getloadavg()[0], 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/finetune/bench")
    ap.add_argument("--model", default="shapes-world", help="the base model (a name or a pipeline directory; one --out per model)")
    ap.add_argument("--cells", default=",".join(CELLS), help="comma-separated cells (default: all)")
    ap.add_argument("--eval", type=int, default=24, help="prompts per split (default 24, as notebook 09's table)")
    ap.add_argument("--base", type=int, default=64, help="base evaluation prompts (default 64, as notebook 09's table)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-sweep", action="store_true", help="skip the strength sweeps (a faster search)")
    ap.add_argument("--report", action="store_true", help="only print the table of finished cells")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = {json.loads(line)["cell"]: json.loads(line) for line in results.read_text().splitlines()} if results.exists() else {}
    n_eval, n_base = (4, 8) if args.quick else (args.eval, args.base)
    if not args.report:
        pipe = load_pipeline(args.model)
        base_file = out / f"base-{n_base}.json"
        if not base_file.exists():
            table = evaluate.generate_table(pipe, world.evaluation_prompts(n_base), score_world)
            base_file.write_text(json.dumps({"all_ok": evaluate.share(table, "all_ok"), "each_ok": table["all_ok"].astype(bool).tolist(),
                                             **evaluate.conditions()}))
        base_saved = json.loads(base_file.read_text())
        base_all = base_saved["all_ok"]
        base_each = base_saved.get("each_ok")  # per prompt, for the paired drop's standard error (older files lack it)
        for cname in sorted({CELLS[name][1] for name in args.cells.split(",")} & set(REACHABLE)):
            ceiling_file = out / f"ceiling-{cname}-{n_eval}.json"
            if not ceiling_file.exists():  # what the base model does with the words the token stands for
                ceiling_file.write_text(json.dumps({**ceiling(pipe, cname, n_eval), **evaluate.conditions()}))
        for name in args.cells.split(","):
            if name in done:
                continue
            started = time.time()
            make, info = train(pipe, name, out, args.quick)
            row = measure(pipe, make, name, info, n_eval, n_base, base_all, not args.no_sweep, base_each)
            row["wall_minutes_cell"] = (time.time() - started) / 60
            with open(results, "a") as f:
                f.write(json.dumps(row) + "\n")
            done[name] = row
            print(json.dumps(row), flush=True)
    report(done, out)


def report(done: dict, out: Path) -> None:
    if not done:
        print("no finished cells")
        return
    table = pd.DataFrame(done.values())
    base = [json.loads(p.read_text()) for p in sorted(out.glob("base-*.json"))]
    shown = {k: v for k, v in base[-1].items() if k != "each_ok"} if base else {}
    print(f"base model all-five accuracy: {shown['all_ok']:.3f} ({shown})" if base else "")
    for cname in REACHABLE:
        for p in sorted(out.glob(f"ceiling-{cname}-*.json")):
            print(f"base model with {concepts.CONCEPTS[cname].plain!r} for the {cname} token ({p.name}): {json.loads(p.read_text())}")
    cols = [c for c in ("cell", "success_seen", "success_held_out", "base_all_five", "base_drop", "base_drop_se", "class_word_kept", "minutes",
                        "file_kb", "load_train_start", "load_train_end") if c in table]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table[cols].round(3).to_string(index=False))
    for _, r in table.iterrows():
        if isinstance(r.get("strength_sweep"), dict):
            print(f"strength sweep {r['cell']}: {r['strength_sweep']}")
        if isinstance(r.get("success_held_out_by_colour"), dict):
            print(f"held-out colours {r['cell']}: {r['success_held_out_by_colour']}")
    print("\ntargets:")
    for _, r in table.iterrows():
        limit = TARGETS["minutes"][r["method"]]
        print(f"  {r['cell']:<26} {r['minutes']:6.1f} min (load {r['load_train_end']})  target <= {limit} min  {'PASS' if r['minutes'] <= limit else 'MISS'}")
        if r["method"] == "lora":
            print(f"  {r['cell']:<26} {r['file_kb']:6.0f} KB   target <= 1024 KB  {'PASS' if r['file_kb'] <= 1024 else 'MISS'}")
        if r["concept"] == "star" and r["method"] in ("lora", "dreambooth") and r["data"] == "clean":
            ok = min(r["success_seen"], r["success_held_out"]) >= 0.85
            print(f"  {r['cell']:<26} star seen {r['success_seen']:.2f} held-out {r['success_held_out']:.2f}  target >= 0.85  {'PASS' if ok else 'MISS'}")
        if r["method"] == "embedding" and r["concept"] in REACHABLE and r["data"] == "clean":
            ok = min(r["success_seen"], r["success_held_out"]) >= 0.90
            print(f"  {r['cell']:<26} {r['concept']} seen {r['success_seen']:.2f} held-out {r['success_held_out']:.2f}  target >= 0.90  {'PASS' if ok else 'MISS'}")
        kept = (r.get("prior_weight") or 0) > 0 or (r.get("preserve_weight") or 0) > 0  # prior or output preservation
        if r["method"] == "dreambooth" or (r["method"] == "lora" and kept):
            verdict = ("PASS" if r["base_drop"] <= 0.03 else "MISS") if kept else "measured (no preservation)"
            se = f" +- {r['base_drop_se']:.3f}" if pd.notna(r.get("base_drop_se")) else ""
            print(f"  {r['cell']:<26} base drop {r['base_drop']:+.3f}{se}  target <= 0.03 with prior or output preservation  {verdict}")


if __name__ == "__main__":
    main()
