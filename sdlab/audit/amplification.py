"""Bias amplification in the shapes world, where the truth is known (Seshadri et al. 2023).

The shapes world puts a skew in on purpose: triangles are yellow half the
time, and a yellow triangle's caption leaves the colour out 70% of the time.
Ask the model for "a triangle" and count yellow ones. Is that more than the
data? The answer depends on the baseline: all triangle images (50% yellow) or
the training captions that, like the prompt, name no colour (~78% yellow).
Seshadri et al. show that comparing against the first overstates amplification;
this module reports both, with confidence intervals, per guidance scale.

Generation takes any ``generate(prompt, n, guidance, seed) -> uint8 (n,64,64,3)``
and any ``check(image) -> dict`` so the arithmetic is testable without a model.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from ..errors import ModelNotFoundError, ValidationError
from .languages import wilson
from ..progress import Reporter
from .results import AuditResult

Generate = Callable[[str, int, float, int], np.ndarray]
Check = Callable[[np.ndarray], dict]
ATTRIBUTES = ("shape", "colour", "size", "position", "background")


def _mention_patterns() -> dict[str, re.Pattern]:
    """Regexes telling whether a shapes-world caption states each attribute (synonyms included)."""
    from ..mini import world

    shapes = "|".join(world.SHAPES)
    sizes = "|".join(w for s in world.SIZES for w in world.SYNONYMS.get(s, (s,)))
    return {
        "shape": re.compile(rf"\b(?:{shapes})\b"),
        "colour": re.compile(rf"\b(?:{'|'.join(world.COLOURS)})\s+(?:{shapes})\b"),  # colour sits just before the shape
        "size": re.compile(rf"\b(?:{sizes})\b"),
        "position": re.compile(r"\b(?:at the|on the (?:left|right)|in the (?:center|middle)|corner)\b"),
        "background": re.compile(r"\bbackground\b"),
    }


def _check_spec(given: dict[str, str], attribute: str) -> None:
    if "shape" not in given:
        raise ValidationError("given: must fix the shape (the prompt names a shape), e.g. {'shape': 'triangle'}")
    for key in [*given, attribute]:
        if key not in ATTRIBUTES:
            raise ValidationError(f"attribute: {key!r} is not one of {', '.join(ATTRIBUTES)}")
    if attribute in given:
        raise ValidationError(f"attribute: {attribute!r} is fixed by the prompt; pick an attribute the prompt leaves open")


def training_skew(meta: pd.DataFrame, given: dict[str, str], attribute: str, value: str) -> dict[str, Any]:
    """Share of ``attribute == value`` among training images matching ``given``: all of them, and those
    whose caption, like an under-specified prompt, states ``given`` but not ``attribute``."""
    _check_spec(given, attribute)
    patterns = _mention_patterns()
    match = np.ones(len(meta), dtype=bool)
    for key, v in given.items():
        match &= (meta[key] == v).to_numpy()
    captions = meta["TEXT"].astype(str).str.lower()
    stated = np.ones(len(meta), dtype=bool)
    for key in given:
        stated &= captions.str.contains(patterns[key]).to_numpy()
    under = match & stated & ~captions.str.contains(patterns[attribute]).to_numpy()
    hit = (meta[attribute] == value).to_numpy()
    return {
        "train_rows_all": int(match.sum()), "train_hits_all": int((hit & match).sum()),
        "train_rows_underspecified": int(under.sum()), "train_hits_underspecified": int((hit & under).sum()),
    }


def pipeline_generator(pipe: Any, steps: int = 25) -> Generate:
    """Wrap a diffusers pipeline as ``generate``: CPU generators seeded seed…seed+n-1, uint8 RGB out."""
    import torch

    def generate(prompt: str, n: int, guidance: float, seed: int) -> np.ndarray:
        gens = [torch.Generator("cpu").manual_seed(seed + i) for i in range(n)]
        out = pipe([prompt] * n, guidance_scale=guidance, num_inference_steps=steps, generator=gens, output_type="np")
        return np.clip(np.round(np.asarray(out.images) * 255), 0, 255).astype(np.uint8)

    return generate


def generate_checked(generate: Generate, check: Check, prompt: str, n: int, guidance_scales: Iterable[float],
                     seed: int = 0, batch: int = 16, callback: Callable[[int, int], None] | None = None,
                     progress: bool = False) -> pd.DataFrame:
    """``n`` images per guidance scale for ``prompt``, each run through ``check``: one tidy row per image."""
    if n < 1 or batch < 1:
        raise ValidationError(f"n and batch: must be at least 1, got n={n}, batch={batch}")
    scales = [float(g) for g in guidance_scales]
    if not scales:
        raise ValidationError("guidance_scales: give at least one guidance scale")
    rows, total = [], n * len(scales)
    with Reporter(callback, progress, "generate") as report:
        report(0, total)
        for g in scales:
            for start in range(0, n, batch):
                k = min(batch, n - start)
                images = np.asarray(generate(prompt, k, g, seed + start))
                if images.shape[0] != k or images.dtype != np.uint8:
                    raise ValidationError(f"generate: must return {k} uint8 RGB images, got {images.shape} {images.dtype}")
                for i, image in enumerate(images):
                    found = check(image)
                    rows.append({"guidance": g, "seed": seed + start + i, **{a: found.get(a) for a in ATTRIBUTES}})
                report(len(rows), total)
    return pd.DataFrame(rows)


def _verdict(low: float, high: float) -> str:
    return "amplifies" if low > 0 else ("reduces" if high < 0 else "keeps")


def _diff_ci(k1: int, n1: int, k0: int, n0: int, rng: np.random.Generator, n_boot: int, alpha: float) -> tuple[float, float]:
    """Percentile bootstrap CI of k1/n1 - k0/n0 for two independent samples."""
    if n1 == 0 or n0 == 0:
        return np.nan, np.nan
    d = rng.binomial(n1, k1 / n1, n_boot) / n1 - rng.binomial(n0, k0 / n0, n_boot) / n0
    return float(np.quantile(d, alpha)), float(np.quantile(d, 1 - alpha))


def amplification(generated: pd.DataFrame, training: pd.DataFrame, given: dict[str, str] | None = None,
                  attribute: str = "colour", value: str = "yellow", prompt: str | None = None,
                  n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> AuditResult:
    """Compare the skew in checked generations with the training skew, per guidance scale.

    ``generated``: rows from :func:`generate_checked`; ``training``: shapes-world
    metadata (``world.make_dataset``). Shares of generations count images where
    the checker found ``attribute``. Verdicts come from the CI of the difference.
    """
    given = {"shape": "triangle"} if given is None else dict(given)
    train = training_skew(training, given, attribute, value)
    alpha = (1 - confidence) / 2
    rng = np.random.default_rng(seed)
    n_all, k_all = train["train_rows_all"], train["train_hits_all"]
    n_under, k_under = train["train_rows_underspecified"], train["train_hits_underspecified"]
    records, dist = [], []
    for g, part in generated.groupby("guidance", sort=True):
        found = part[attribute].dropna()
        n, k = len(found), int((found == value).sum())
        low, high = wilson(np.array([k]), n)
        d_all = _diff_ci(k, n, k_all, n_all, rng, n_boot, alpha)
        d_under = _diff_ci(k, n, k_under, n_under, rng, n_boot, alpha)
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
    table = pd.DataFrame(records)
    if prompt is None:
        from ..mini import world

        prompt = world.describe(**given)
    stats = {"prompt": prompt, "attribute": attribute, "value": value, **train,
             "train_share_all": k_all / max(n_all, 1), "train_share_underspecified": k_under / max(n_under, 1)}
    notes = [f"generated_share: of images where the checker found a {attribute}; CI: Wilson {confidence:.0%}",
             "verdicts from the bootstrap CI of (generated - training): amplifies / keeps / reduces",
             "Seshadri et al. 2023: the fair baseline is the under-specified training captions"]
    return AuditResult("amplification", table, stats=stats, tables={"distribution": pd.DataFrame(dist)}, notes=notes)


def run_amplification(model: str = "shapes-world", generate: Generate | None = None, check: Check | None = None,
                      training: pd.DataFrame | None = None, train_rows: int = 4000, n: int = 64,
                      guidance_scales: Iterable[float] = (1.0, 3.0, 5.0, 7.5), given: dict[str, str] | None = None,
                      attribute: str = "colour", value: str = "yellow", seed: int = 0, steps: int = 25,
                      callback: Callable[[int, int], None] | None = None, progress: bool = False) -> AuditResult:
    """The whole study: training skew from ``world.make_dataset``, generations from ``model``, checker verdicts.

    ``generate``/``check`` default to ``sdlab.models.load_pipeline(model)`` and
    ``sdlab.mini.checker.check``; a missing model raises ModelNotFoundError.
    """
    from ..mini import world

    given = {"shape": "triangle"} if given is None else dict(given)
    _check_spec(given, attribute)
    if training is None:
        _, training = world.make_dataset(train_rows, seed=seed)
    if generate is None:
        try:
            from ..models import load_pipeline
        except ImportError as exc:
            raise ModelNotFoundError(f"model: {model!r} cannot be loaded: sdlab.models.load_pipeline is not available yet") from exc
        generate = pipeline_generator(load_pipeline(model), steps=steps)
    if check is None:
        try:
            from ..mini.checker import check
        except ImportError as exc:
            raise ModelNotFoundError("check: sdlab.mini.checker is not available yet") from exc
    prompt = world.describe(**given)
    generated = generate_checked(generate, check, prompt, n, guidance_scales, seed=seed, callback=callback, progress=progress)
    return amplification(generated, training, given, attribute, value, prompt=prompt, seed=seed)
