"""Caption languages: who the data speaks for.

laion2B-multi has a ``LANGUAGE`` column; elsewhere captions are detected
offline with lingua (its models ship in the wheel) on a deterministic sample,
with a confidence interval from the sample size. Shares are set beside how
many people speak each language, as context for "English-first" data.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd

from ..errors import DependencyError
from ..progress import Callback, Reporter
from ..validation import POSITIVE_INT, SEED, Options, validate_params
from .dataset import Dataset
from .expr import col, lower
from .intervals import wilson
from .results import AuditResult
from .schema import not_available

WORLD_POPULATION_MILLIONS = 8000  # 2023, for "share of the world that speaks it"
UNKNOWN = "unknown"
ACCURACY = ("high", "low")
CONSTRAINTS = {"sample": [POSITIVE_INT], "seed": [SEED], "accuracy": [Options(ACCURACY)]}


def load_speakers() -> pd.DataFrame:
    """ISO 639-1 code, name and total speakers (millions) of the most spoken languages, shipped as data."""
    with resources.files("sdlab.audit").joinpath("data/language_speakers.csv").open("r", encoding="utf-8") as fh:
        return pd.read_csv(fh, comment="#")


@lru_cache(maxsize=2)
def _detector(accuracy: str):
    """Lingua over every *spoken* language (Latin excluded: short product captions otherwise read as Latin).

    High accuracy (default) also uses longer n-grams, which short captions
    need: low accuracy scatters short English captions over unrelated
    languages. It needs ~1 GB of memory and loads models on first use.
    """
    try:
        from lingua import LanguageDetectorBuilder
    except ImportError as exc:  # pragma: no cover - a dependency
        raise DependencyError("language detection needs lingua: pip install lingua-language-detector") from exc
    builder = LanguageDetectorBuilder.from_all_spoken_languages()
    if accuracy == "low":
        builder = builder.with_low_accuracy_mode().with_minimum_relative_distance(0.1)
    return builder.build()


def detect_languages(texts: list[str], accuracy: str = "high") -> list[str]:
    """ISO 639-1 code per text (``unknown`` where lingua cannot tell), offline."""
    validate_params({"accuracy": accuracy}, CONSTRAINTS)
    if not texts:
        return []
    found = _detector(accuracy).detect_languages_in_parallel_of(list(texts))
    return [lang.iso_code_639_1.name.lower() if lang is not None else UNKNOWN for lang in found]


def languages(ds: Dataset, sample: int = 2000, seed: int = 0, accuracy: str = "high",
              callback: Callback | None = None, progress: bool = False) -> AuditResult:
    """Share per language: from ``LANGUAGE`` where present, else detected on ``sample`` captions (with 95% CIs)."""
    validate_params({"sample": sample, "seed": seed, "accuracy": accuracy}, CONSTRAINTS)
    reason = not_available("languages", ds.columns)
    if reason:
        return AuditResult.not_available("languages", reason)
    with Reporter(callback, progress, "languages") as report:
        if "LANGUAGE" in ds.columns:
            counts = ds.engine.group_count({"language": lower(col("LANGUAGE"))}, callback=report)
            counts["language"] = counts["language"].fillna(UNKNOWN).replace("", UNKNOWN)
            method = "LANGUAGE column"
        else:
            texts = ds.engine.sample_text("TEXT", sample, seed)
            report(0, len(texts))
            detected = detect_languages(texts, accuracy)
            report(len(texts), len(texts))
            counts = pd.Series(detected, dtype=object).value_counts().rename_axis("language").reset_index(name="count")
            method = f"detected by lingua ({accuracy} accuracy) on {len(texts)} captions sampled by md5 (seed {seed})"
    counts = counts.groupby("language", as_index=False)["count"].sum()
    n = int(counts["count"].sum())
    table = counts.sort_values(["count", "language"], ascending=[False, True]).reset_index(drop=True)
    table["share"] = table["count"] / max(n, 1)
    low, high = wilson(table["count"].to_numpy(), n)
    sampled = "LANGUAGE" not in ds.columns
    table["ci_low"], table["ci_high"] = (low, high) if sampled else (table["share"], table["share"])
    speakers = load_speakers()
    context = speakers.merge(table[["language", "share", "ci_low", "ci_high"]], on="language", how="left")
    context["share"] = context["share"].fillna(0.0)
    context["world_share"] = context["speakers_millions"] / WORLD_POPULATION_MILLIONS
    context["representation"] = context["share"] / context["world_share"]
    english = table.loc[table["language"] == "en"]
    stats = {
        "rows_counted": n,
        "method": method,
        "languages": int((table["language"] != UNKNOWN).sum()),
        "english_share": float(english["share"].iloc[0]) if len(english) else 0.0,
        "english_world_speaker_share": float(speakers.loc[speakers["language"] == "en", "speakers_millions"].iloc[0]) / WORLD_POPULATION_MILLIONS,
    }
    notes = [method, "world_share: total (L1+L2) speakers / 8.0 billion people, approximate (Ethnologue 2023)"]
    return AuditResult("languages", table, stats=stats, tables={"speakers": context}, notes=notes)
