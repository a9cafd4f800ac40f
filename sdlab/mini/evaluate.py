"""How well a shapes-world model follows its prompts, measured with the attribute checker.

- accuracy per attribute per guidance value on a fixed set of fully specified prompts;
- skews: what the model draws for under-specified prompts (``a triangle``) beside
  the training captions' skew;
- negative prompts: ``a circle`` with and without ``red`` as the negative prompt;
- similarity across seeds: one prompt, several seeds, mean pairwise SSIM (lower = more diverse),
  beside the same SSIM over the world's own scenes of that prompt (what learning the data exactly
  would give);
- saturation and clipped pixels per guidance (very high CFG pushes colours out of range, as in real SD).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..generate import generate_many
from ..metrics import clipped_share, mean_pairwise_ssim, saturation
from ..models import model_info
from ..progress import Callback
from ..spec import GenerationSpec
from ..validation import POSITIVE_INT, Check, Interval, validate_params
from . import checker, world

GUIDANCE_VALUES = (1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0)
EVALUATE_CONSTRAINTS = {
    "n_prompts": [POSITIVE_INT],
    "n_seeds": [Interval(int, 2, None)],
    "guidance": [Check(lambda g: len(g) > 0 and all(Interval(float, 0, None).accepts(v) for v in g), "one or more numbers >= 0")],
}


def _run(pipe, specs: list[GenerationSpec], progress: bool, desc: str, callback: Callback | None = None) -> list:
    bar = tqdm(total=len(specs), desc=desc, disable=not progress)

    def cb(done: int, total: int) -> None:
        bar.update(done - bar.n)
        if callback is not None:
            callback(done, total)

    try:
        return generate_many(pipe, specs, callback=cb)
    finally:
        bar.close()


def accuracy(
    pipe, prompts: pd.DataFrame | None = None, guidance: tuple[float, ...] = GUIDANCE_VALUES,
    steps: int | None = None, sampler: str | None = None, progress: bool = True, callback: Callback | None = None,
) -> pd.DataFrame:
    """One row per prompt x guidance: what the checker found and whether each attribute is right."""
    prompts = world.evaluation_prompts() if prompts is None else prompts
    specs, keys = [], []
    for g in guidance:
        for _, row in prompts.iterrows():
            specs.append(GenerationSpec(row["prompt"], seed=int(row["seed"]), guidance=float(g), steps=steps, sampler=sampler))
            keys.append(g)
    results = _run(pipe, specs, progress, "eval", callback)
    expected = pd.concat([prompts] * len(guidance), ignore_index=True)
    scored = checker.score([np.asarray(im) for im, _ in results], expected)
    table = pd.concat([expected, scored], axis=1)
    table["guidance"] = keys
    table["saturation"] = [saturation(np.asarray(im)) for im, _ in results]
    table["clipped_share"] = [clipped_share(np.asarray(im)) for im, _ in results]
    table["sampler"] = [s.sampler for _, s in results]
    table["steps"] = [s.steps for _, s in results]
    return table


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per attribute (and all five) and mean saturation, one row per guidance value."""
    columns = [f"{a}_ok" for a in checker.ATTRIBUTES] + ["all_ok", "saturation", "clipped_share"]
    out = table.groupby("guidance")[columns].mean().reset_index()
    return out.rename(columns={c: c.removesuffix("_ok") for c in columns})


def skews(pipe, n_seeds: int = 64, guidance: float | None = None, progress: bool = True) -> pd.DataFrame:
    """Colour shares for ``a triangle`` / ``a circle`` (no colour named): model vs training captions."""
    _, meta = world.make_dataset(4000, seed=0)
    rows = []
    for shape in ("triangle", "circle"):
        specs = [GenerationSpec(f"a {shape}", seed=s, guidance=guidance) for s in range(n_seeds)]
        found = [checker.check(np.asarray(im))["colour"] for im, _ in _run(pipe, specs, progress, f"skew {shape}")]
        names_colour = meta["TEXT"].map(lambda text: "colour" in world.parse_caption(text))
        uncoloured = meta[(meta["shape"] == shape) & ~names_colour]
        train_share = uncoloured["colour"].value_counts(normalize=True)
        for colour in world.COLOURS:
            rows.append({
                "prompt": f"a {shape}", "colour": colour,
                "generated_share": found.count(colour) / n_seeds,
                "training_share": float(train_share.get(colour, 0.0)),
            })
    return pd.DataFrame(rows)


def negative_prompt_effect(pipe, n_seeds: int = 64, guidance: float | None = None, progress: bool = True) -> pd.DataFrame:
    """Share of red circles for ``a circle``, without and with the negative prompt ``red``."""
    rows = []
    for negative in ("", "red"):
        specs = [GenerationSpec("a circle", negative_prompt=negative, seed=s, guidance=guidance) for s in range(n_seeds)]
        found = [checker.check(np.asarray(im)) for im, _ in _run(pipe, specs, progress, f"negative {negative!r}")]
        rows.append({
            "negative_prompt": negative, "n": n_seeds,
            "red_share": sum(f["colour"] == "red" for f in found) / n_seeds,
            "circle_share": sum(f["shape"] == "circle" for f in found) / n_seeds,
        })
    return pd.DataFrame(rows)


def data_similarity(prompt: str, n: int = 8, seed: int = 0) -> float:
    """Mean pairwise SSIM of ``n`` scenes the world itself draws for ``prompt`` (higher: less diverse):
    what a model that learned the data exactly would score (the world's jitter sets it, not the model)."""
    rng = np.random.default_rng(seed)
    attrs = world.parse_caption(prompt)
    return mean_pairwise_ssim([np.asarray(world.render(world.sample_scene(rng, **attrs))) for _ in range(n)])


def seed_similarity(pipe, prompts: list[str] | None = None, n_seeds: int = 8, guidance: float | None = None) -> pd.DataFrame:
    """Per prompt: mean pairwise SSIM over ``n_seeds`` seeds (higher: less diverse), the share of images
    that satisfy it, and the same SSIM for the world's own scenes of that prompt (:func:`data_similarity`)."""
    prompts = prompts or ["a large red circle at the top left on a white background", "a small blue square on the right on a black background"]
    rows = []
    for prompt in prompts:
        attrs = world.parse_caption(prompt)
        results = generate_many(pipe, [GenerationSpec(prompt, seed=s, guidance=guidance) for s in range(n_seeds)])
        images = [np.asarray(im) for im, _ in results]
        ok = checker.score(images, pd.DataFrame([attrs] * n_seeds))["all_ok"]
        distinct = len({im.tobytes() for im in images})
        rows.append({"prompt": prompt, "n": n_seeds, "mean_pairwise_ssim": mean_pairwise_ssim(images),
                     "data_mean_pairwise_ssim": data_similarity(prompt, n_seeds), "distinct_images": distinct,
                     "satisfied_share": float(ok.mean())})
    return pd.DataFrame(rows)


def evaluation_images(n_prompts: int, guidance: tuple[float, ...], n_seeds: int) -> int:
    """How many images :func:`evaluate` generates: every prompt at every guidance, two shapes' and two negative
    prompts' seeds, eight seeds of two prompts for the similarity (what its cost is estimated from)."""
    return n_prompts * len(guidance) + 4 * n_seeds + 2 * 8


def evaluate(pipe, n_prompts: int = 320, guidance: tuple[float, ...] = GUIDANCE_VALUES, n_seeds: int = 64, progress: bool = True) -> dict:
    """Everything above, as one JSON-able report (its "diversity" rows are :func:`seed_similarity`'s)."""
    validate_params({"n_prompts": n_prompts, "n_seeds": n_seeds, "guidance": guidance}, EVALUATE_CONSTRAINTS)
    started = time.perf_counter()
    defaults = model_info(pipe).defaults
    table = accuracy(pipe, world.evaluation_prompts(n_prompts), guidance, progress=progress)
    summary = summarize(table)
    best = summary.loc[summary["all"].idxmax()]
    return {
        "defaults": defaults,
        "n_prompts": n_prompts,
        "accuracy": summary.round(4).to_dict(orient="records"),
        "best_guidance": float(best["guidance"]),
        "skews": skews(pipe, n_seeds, progress=progress).round(4).to_dict(orient="records"),
        "negative_prompt": negative_prompt_effect(pipe, n_seeds, progress=progress).round(4).to_dict(orient="records"),
        "diversity": seed_similarity(pipe).round(4).to_dict(orient="records"),
        "seconds": round(time.perf_counter() - started, 1),
    }
