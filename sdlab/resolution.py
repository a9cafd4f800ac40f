"""Generation away from the model's native size, measured, beside the hires-fix remedy.

SD models are trained at one size (SD 1.x at 512, SD 2 at 768, SDXL at 1024) and their
convolutions see a fixed receptive field: asked for a larger canvas they tend to fill it with
repeated subjects, asked for a smaller one they lose the composition. :func:`measure_sizes`
generates the same prompts and seeds at each size, directly and (for enlarged square sizes)
through :func:`sdlab.hires.hires_fix`, and records what ``measure(image, spec)`` reads from each
image: the caller picks the measure (for the shapes world, :func:`sdlab.mini.resolution.size_metric`:
duplicated shapes and prompt accuracy).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pandas as pd

from .generate import generate_many, native_size
from .hires import DEFAULT_STRENGTH, HIRES_CONSTRAINTS, hires_fix
from .precision import measure_means
from .progress import Callback
from .spec import GenerationSpec
from .validation import Check, invalid, validate_params

Measure = Callable[[np.ndarray, GenerationSpec], dict]
SIZE_CONSTRAINTS = {
    "sizes": [Check(lambda s: len(s) > 0 and all(_pair(x) for x in s), "one or more sizes: whole numbers or (width, height) pairs")],
    "specs": [Check(lambda s: len(s) > 0 and all(isinstance(x, GenerationSpec) and x.mode == "txt2img" and x.batch_size == 1 for x in s),
                    "one or more text-to-image GenerationSpecs of batch size 1")],
    "direct": [bool],
    "hires": [Check(lambda h: isinstance(h, dict) and set(h) <= {"strength", "upscaler", "steps"}, "a dict with strength, upscaler, steps"), None],
}


def _pair(size) -> tuple[int, int] | None:
    """``64`` -> (64, 64); ``(128, 64)`` -> (128, 64); anything else None."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size, size
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in size):
        return int(size[0]), int(size[1])
    return None


def measure_sizes(
    pipe, specs: list[GenerationSpec], sizes, measure: Measure, hires: dict | None = None, direct: bool = True,
    callback: Callback | None = None,
) -> pd.DataFrame:
    """One row per size, method and spec: ``method`` (``direct`` or ``hires``), ``width``,
    ``height``, ``scale`` (against the native size), ``strength`` (the hires fix's; None for direct),
    ``prompt``, ``seed``, ``seconds`` (per image, for the size and method) and ``measure(image, spec)``'s columns.

    ``hires`` (e.g. ``{"strength": 0.5, "upscaler": "lanczos"}``; None: direct only) adds the hires
    fix from the native size for every square size larger than native; ``direct=False`` leaves the
    direct generations out (another hires setting over sizes already measured). ``callback(done, total)`` counts images.
    """
    specs = list(specs)
    validate_params({"sizes": list(sizes), "specs": specs, "hires": hires, "direct": direct}, SIZE_CONSTRAINTS)
    if hires:
        validate_params(hires, HIRES_CONSTRAINTS)
    native = native_size(pipe)
    pairs = [_pair(s) for s in sizes]
    jobs = [("direct", w, h) for w, h in pairs] if direct else []
    if hires is not None:
        jobs += [("hires", w, h) for w, h in pairs if w == h and w > native]
    if not jobs:
        raise invalid("direct", direct, "True, or a hires setting with a square size above the native " + str(native))
    specs = [s.with_seed() for s in specs]
    total, done, rows = len(jobs) * len(specs), 0, []
    for method, width, height in jobs:
        started = time.perf_counter()
        if method == "direct":
            made = generate_many(pipe, [s.replace(width=width, height=height) for s in specs])
            images = [(np.asarray(im.convert("RGB")), spec) for im, spec in made]
        else:
            images = []
            for spec in specs:
                result = hires_fix(pipe, spec.replace(width=native, height=native), scale=width / native, **hires)
                images.append((np.asarray(result.images[0].convert("RGB")), result.specs[0]))
        seconds = (time.perf_counter() - started) / len(specs)
        for image, spec in images:
            rows.append({"method": method, "width": width, "height": height, "scale": max(width, height) / native,
                         "strength": hires.get("strength", DEFAULT_STRENGTH) if method == "hires" else None,
                         "prompt": spec.prompt, "seed": spec.seed, "seconds": seconds, **measure(image, spec)})
        done += len(specs)
        if callback is not None:
            callback(done, total)
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """One row per method and size: images, seconds per image, and the mean of every number or
    true/false the measure gave (e.g. the share of duplicated shapes, the share of prompts satisfied)."""
    keys = ["method", "width", "height", "strength"]
    groups = table.groupby(keys, sort=False, dropna=False)
    out = pd.DataFrame({"images": groups.size(), "seconds_per_image": groups["seconds"].first()})
    return out.join(measure_means(table, keys, {"scale", "prompt", "seed", "seconds"})).reset_index()
