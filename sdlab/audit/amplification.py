"""Bias amplification in a world where the truth is known (Seshadri et al. 2023).

The shapes world puts a skew in on purpose: triangles are yellow half the
time, and a yellow triangle's caption leaves the colour out most of the time.
Ask the model for "a triangle" and count yellow ones. Is that more than the
data? The answer depends on the baseline: all triangle images, or the
training captions that, like the prompt, name no colour. Seshadri et al. show
that comparing against the first overstates amplification; this module
reports both, with confidence intervals, per guidance scale.

The study knows no world of its own: the caller passes one in as plain
functions (a :class:`KnownWorld`: how a caption states attributes, how an
image shows them, how a prompt names them, where training metadata comes
from). The CLI and notebook 07 pass the shapes world's; tests pass stand-ins,
so the arithmetic is testable without a model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from ..errors import ValidationError
from ..progress import Callback, Reporter
from ..validation import Check as Rule
from ..validation import POSITIVE_INT, SEED, Interval, Options, invalid, validate_params
from .intervals import difference_ci, wilson
from .results import AuditResult

Generate = Callable[[str, int, float, int], np.ndarray]  # (prompt, n, guidance, seed) -> uint8 (n, H, W, 3)
Check = Callable[[np.ndarray], dict]  # image -> {attribute: value it shows, or None}
Parse = Callable[[str], dict]  # caption -> {attribute: value} for the attributes it states
ATTRIBUTES = ("shape", "colour", "size", "position", "background")
CONSTRAINTS = {
    "given": [Rule(lambda g: isinstance(g, dict) and "shape" in g and set(g) <= set(ATTRIBUTES),
                    f"a dict of attributes (among {', '.join(ATTRIBUTES)}) that fixes the shape, "
                    "e.g. {'shape': 'triangle'}")],
    "attribute": [Options(ATTRIBUTES)],
    "n": [POSITIVE_INT], "batch": [POSITIVE_INT], "steps": [POSITIVE_INT], "train_rows": [POSITIVE_INT],
    "guidance_scales": [Rule(lambda g: len(g) > 0 and all(Interval(float, 0, None).accepts(x) for x in g),
                              "a non-empty list of guidance scales (numbers >= 0)")],
    "seed": [SEED], "n_boot": [POSITIVE_INT], "confidence": [Interval(float, 0, 1, closed="neither")],
    "prompt": [str],
}


@dataclass(frozen=True)
class KnownWorld:
    """A world whose truth is known, as the study reads it; the caller chooses it.

    ``parse(caption)``: the attributes a caption states. ``check(image)``: the
    attributes an image shows. ``describe(**given)``: the prompt that names
    just ``given``. ``training(rows, seed)``: training metadata, a ``TEXT``
    column plus one column per attribute holding the truth.
    """

    parse: Parse
    check: Check
    describe: Callable[..., str]
    training: Callable[[int, int], pd.DataFrame]


def _check_spec(given: dict[str, str], attribute: str) -> None:
    validate_params({"given": given, "attribute": attribute}, CONSTRAINTS)
    if attribute in given:
        raise invalid("attribute", attribute, f"an attribute the prompt leaves open, not one of {', '.join(given)}")


def _check_values(world: KnownWorld, given: dict[str, str], attribute: str, value: str) -> None:
    """Refuse a value the world's own words do not have (a shape or colour it never draws would measure nothing):
    the prompt naming every value, read back by the world's caption parser, must give each value back."""
    wanted = {**given, attribute: value}
    try:
        stated = world.parse(world.describe(**wanted))
    except Exception:  # a describer that cannot even word the value
        stated = {}
    for key, v in wanted.items():
        if str(stated.get(key)) != str(v):
            raise invalid("value" if key == attribute else key, v, f"a {key} the world's captions name")


def training_skew(meta: pd.DataFrame, given: dict[str, str], attribute: str, value: str, parse: Parse) -> dict[str, Any]:
    """Share of ``attribute == value`` among training images matching ``given``: all of them, and those
    whose caption (read by ``parse``), like an under-specified prompt, states ``given`` but not ``attribute``."""
    _check_spec(given, attribute)
    match = np.ones(len(meta), dtype=bool)
    for key, v in given.items():
        match &= (meta[key] == v).to_numpy()
    captions = meta["TEXT"].astype(str).str.lower()
    stated = captions.map({c: set(parse(c)) for c in captions.unique()})  # captions repeat: parse each once
    under = match & stated.map(lambda s: set(given) <= s and attribute not in s).to_numpy(bool)
    hit = (meta[attribute] == value).to_numpy()
    return {
        "train_rows_all": int(match.sum()), "train_hits_all": int((hit & match).sum()),
        "train_rows_underspecified": int(under.sum()), "train_hits_underspecified": int((hit & under).sum()),
    }


def pipeline_generator(pipe: Any, steps: int = 25) -> Generate:
    """Wrap a diffusers pipeline as ``generate``: CPU generators seeded seed…seed+n-1, uint8 RGB out."""
    import torch

    validate_params({"steps": steps}, CONSTRAINTS)

    def generate(prompt: str, n: int, guidance: float, seed: int) -> np.ndarray:
        gens = [torch.Generator("cpu").manual_seed(seed + i) for i in range(n)]
        out = pipe([prompt] * n, guidance_scale=guidance, num_inference_steps=steps, generator=gens, output_type="np")
        return np.clip(np.round(np.asarray(out.images) * 255), 0, 255).astype(np.uint8)

    return generate


Batches = Callable[[list[tuple[float, int, int]]], Iterable[tuple[int, np.ndarray]]]  # jobs -> (job index, images) as done


def generate_checked(generate: Generate | None, check: Check, prompt: str, n: int, guidance_scales: Iterable[float],
                     seed: int = 0, batch: int = 16, callback: Callback | None = None,
                     progress: bool = False, batches: Batches | None = None) -> pd.DataFrame:
    """``n`` images per guidance scale for ``prompt``, each run through ``check``: one tidy row per image.

    The work is cut into jobs ``(guidance, first seed, count)`` of at most ``batch`` images; ``batches``
    runs them elsewhere (a cluster, :func:`run_amplification`) and hands each back as it finishes;
    rows come out in job order either way, so where they ran does not show.
    """
    scales = list(guidance_scales)
    validate_params({"prompt": prompt, "n": n, "guidance_scales": scales, "seed": seed, "batch": batch}, CONSTRAINTS)
    jobs = [(float(g), seed + start, min(batch, n - start)) for g in scales for start in range(0, n, batch)]
    if batches is None:
        batches = lambda jobs: ((i, generate(prompt, k, g, s)) for i, (g, s, k) in enumerate(jobs))  # noqa: E731
    done: dict[int, list[dict]] = {}
    total = n * len(scales)
    with Reporter(callback, progress, "generate") as report:
        report(0, total)
        for i, images in batches(jobs):
            g, s, k = jobs[i]
            images = np.asarray(images)
            if images.shape[0] != k or images.dtype != np.uint8:
                raise ValidationError(f"generate: its {images.shape} {images.dtype} output is not valid; "
                                      f"valid: {k} uint8 RGB images (n x H x W x 3)")
            found = [check(image) for image in images]
            done[i] = [{"prompt": prompt, "guidance": g, "seed": s + j, **{a: f.get(a) for a in ATTRIBUTES}}
                       for j, f in enumerate(found)]
            report(sum(map(len, done.values())), total)
    return pd.DataFrame([row for i in sorted(done) for row in done[i]])


def _generate_on_worker(pipe: Any, prompt: str, n: int, guidance: float, seed: int, steps: int) -> np.ndarray:
    """One job on a Dask worker, with the pipeline that worker keeps."""
    return pipeline_generator(pipe, steps=steps)(prompt, n, guidance, seed)


def _verdict(low: float, high: float) -> str:
    return "amplifies" if low > 0 else ("reduces" if high < 0 else "keeps")


def _prompt_of(generated: pd.DataFrame, prompt: str | None) -> str:
    """The prompt the generations answer: ``prompt`` when given, else the one :func:`generate_checked` recorded."""
    if prompt is not None:
        return prompt
    recorded = generated["prompt"].unique() if "prompt" in generated else []
    if len(recorded) != 1:
        raise invalid("prompt", None, f"the prompt the images were made from (generated records {len(recorded)})")
    return str(recorded[0])


def amplification(generated: pd.DataFrame, training: pd.DataFrame, given: dict[str, str] | None = None,
                  attribute: str = "colour", value: str = "yellow", prompt: str | None = None,
                  n_boot: int = 2000, seed: int = 0, confidence: float = 0.95, *, parse: Parse) -> AuditResult:
    """Compare the skew in checked generations with the training skew, per guidance scale.

    ``generated``: rows from :func:`generate_checked`; ``training``: metadata
    with ``TEXT`` and the true attributes; ``parse`` reads which attributes a
    caption states. Shares of generations count images where the checker found
    ``attribute``. Verdicts come from the CI of the difference.
    """
    given = {"shape": "triangle"} if given is None else dict(given)
    validate_params({"n_boot": n_boot, "seed": seed, "confidence": confidence}, CONSTRAINTS)
    prompt = _prompt_of(generated, prompt)
    train = training_skew(training, given, attribute, value, parse)
    alpha = (1 - confidence) / 2
    rng = np.random.default_rng(seed)
    n_all, k_all = train["train_rows_all"], train["train_hits_all"]
    n_under, k_under = train["train_rows_underspecified"], train["train_hits_underspecified"]
    records, dist = [], []
    for g, part in generated.groupby("guidance", sort=True):
        found = part[attribute].dropna()
        n, k = len(found), int((found == value).sum())
        low, high = wilson(np.array([k]), n)
        d_all = difference_ci(k, n, k_all, n_all, rng, n_boot, alpha)
        d_under = difference_ci(k, n, k_under, n_under, rng, n_boot, alpha)
        share = k / n if n else np.nan
        records.append({
            "guidance": float(g), "images": len(part), "checked": n, "hits": k,
            "generated_share": share, "ci_low": float(low[0]), "ci_high": float(high[0]),
            "train_share_all": k_all / max(n_all, 1), "train_share_underspecified": k_under / max(n_under, 1),
            "diff_vs_all": share - k_all / max(n_all, 1), "diff_vs_all_low": d_all[0], "diff_vs_all_high": d_all[1],
            "diff_vs_underspecified": share - k_under / max(n_under, 1),
            "diff_vs_underspecified_low": d_under[0], "diff_vs_underspecified_high": d_under[1],
            "verdict_vs_all": _verdict(*d_all), "verdict_vs_underspecified": _verdict(*d_under),
        })
        for v, c in found.value_counts().items():
            dist.append({"source": f"generated, guidance {float(g):g}", "value": v, "count": int(c), "share": c / n})
    match = np.ones(len(training), dtype=bool)
    for key, v in given.items():
        match &= (training[key] == v).to_numpy()
    for v, c in training.loc[match, attribute].value_counts().items():
        dist.append({"source": "training, all matching images", "value": v, "count": int(c), "share": c / max(n_all, 1)})
    stats = {"prompt": prompt, "attribute": attribute, "value": value, **train,
             "train_share_all": k_all / max(n_all, 1), "train_share_underspecified": k_under / max(n_under, 1)}
    notes = [f"generated_share: of images where the checker found a {attribute}; CI: Wilson {confidence:.0%}",
             "verdicts from the bootstrap CI of (generated - training): amplifies / keeps / reduces",
             "Seshadri et al. 2023: the fair baseline is the under-specified training captions"]
    return AuditResult("amplification", pd.DataFrame(records), stats=stats,
                       tables={"distribution": pd.DataFrame(dist)}, notes=notes)


def run_amplification(world: KnownWorld, model: str | os.PathLike | None = None, generate: Generate | None = None,
                      check: Check | None = None, training: pd.DataFrame | None = None, train_rows: int = 4000,
                      n: int = 64, guidance_scales: Iterable[float] = (1.0, 3.0, 5.0, 7.5),
                      given: dict[str, str] | None = None, attribute: str = "colour", value: str = "yellow",
                      seed: int = 0, steps: int = 25, callback: Callback | None = None,
                      progress: bool = False, cluster: Any = None) -> AuditResult:
    """The whole study: training skew from ``world.training``, generations from ``model``, checker verdicts.

    ``generate`` defaults to ``sdlab.models.load_pipeline(model)`` (a missing
    model raises ModelNotFoundError), ``check`` to ``world.check``, and
    ``training`` to ``world.training(train_rows, seed)``. ``cluster`` (see
    :func:`sdlab.cluster.connect`) generates on Dask workers, each loading ``model``
    once; the images are those of a local run with the same thread count.
    """
    given = {"shape": "triangle"} if given is None else dict(given)
    _check_spec(given, attribute)
    scales = list(guidance_scales)
    validate_params({"train_rows": train_rows, "n": n, "guidance_scales": scales, "seed": seed, "steps": steps},
                    CONSTRAINTS)
    if generate is None and model is None:
        raise invalid("model", None, "a model sdlab.models.load_pipeline knows, or a generate function")
    if generate is None:  # the model found and the generations' time estimated before it loads
        from ..cost import check_budget, estimate_generation
        from ..models import locate

        source, defaults = locate(model)
        one = estimate_generation(source, defaults.get("width", 512), defaults.get("height", 512), 1, steps)
        check_budget("n", n, one.peak_bytes, one.seconds * n * len(scales) if one.seconds is not None else None)
    _check_values(world, given, attribute, value)
    if training is None:
        training = world.training(train_rows, seed)
    if cluster is not None and (generate is not None or model is None):
        raise invalid("cluster", cluster, "a cluster with model= (each worker loads it), not with a generate function")
    if cluster is not None:
        from ..cluster import check_cluster

        check_cluster(cluster)
    prompt = world.describe(**given)
    run = dict(seed=seed, callback=callback, progress=progress)
    if cluster is not None:
        from ..cluster import ModelSource, connect, map_on_workers

        source = ModelSource.of(model)
        with connect(cluster) as client:
            generated = generate_checked(None, check or world.check, prompt, n, scales, **run, batches=lambda jobs: map_on_workers(
                client, source, _generate_on_worker, [(prompt, k, g, s, steps) for g, s, k in jobs]))
    else:
        if generate is None:
            from ..models import load_pipeline

            generate = pipeline_generator(load_pipeline(model), steps=steps)
        generated = generate_checked(generate, check or world.check, prompt, n, scales, **run)
    return amplification(generated, training, given, attribute, value, prompt=prompt, seed=seed, parse=world.parse)
