"""Precision: what bf16 and fp16 change against fp32, measured, and the known fp16 trap handled.

- The trap: SDXL's VAE overflows in fp16 (its activations pass fp16's 65,504 and decode to NaN,
  a black image). Its config says so (``force_upcast``), and diffusers' own SDXL pipelines decode
  in fp32 for each call. :func:`vae_needs_upcast` is that rule; :func:`decoding_vae` gives sdlab's
  own encoding and decoding (hires fix's latent upscale, previews) an fp32 copy of such a VAE, kept
  beside the pipeline, so the user's VAE is never cast. A VAE fixed for fp16 (SDXL's "fp16-fix",
  ``load_pipeline(..., vae=DIR)``) says ``force_upcast: false`` and decodes in fp16.
- :func:`measure_dtypes`: the same specs in each dtype, each dtype loaded in a process of its own
  (so its peak memory is that process's), against a reference dtype: pixel difference, seconds
  per image, peak memory, and whatever ``measure(image, spec)`` reads from each image (the
  shapes world's checker, handed in by the caller). :func:`summarize` gives one row per dtype.

fp16 runs on the CPU in the torch this project locks (slowly: no fp16 kernels on most CPUs), so
it is measured there too rather than refused.
"""
from __future__ import annotations

import copy
import os
import resource
import sys
import weakref
from typing import Callable

import numpy as np
import pandas as pd

from .spec import GenerationSpec
from .validation import Check, Options, invalid, validate_params

DTYPES = ("fp32", "bf16", "fp16")
Measure = Callable[[np.ndarray, GenerationSpec], dict]
MEASURE_CONSTRAINTS = {
    "dtypes": [Check(lambda d: len(d) > 0 and len(set(d)) == len(d) and all(x in DTYPES for x in d),
                     f"one or more distinct names from {', '.join(DTYPES)}")],
    "reference": [Options(DTYPES)],
    "specs": [Check(lambda s: len(s) > 0 and all(isinstance(x, GenerationSpec) and x.mode == "txt2img" for x in s),
                    "one or more text-to-image GenerationSpecs")],
    "isolate": [bool],
}

_FP32_VAES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # fp16 VAE -> its fp32 copy


def vae_needs_upcast(pipe) -> bool:
    """Whether the pipeline's VAE must run in fp32: it is fp16 and its config asks for it (SDXL's)."""
    import torch

    vae = getattr(pipe, "vae", None)
    return vae is not None and vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))


def decoding_vae(pipe):
    """The VAE sdlab's own code should encode and decode with: the pipeline's own, or, when
    :func:`vae_needs_upcast`, an fp32 copy made once and kept beside it (the pipeline's VAE is
    never cast). Latents and images must be cast to the returned VAE's dtype."""
    if not vae_needs_upcast(pipe):
        return pipe.vae
    copy32 = _FP32_VAES.get(pipe.vae)
    if copy32 is None:
        import torch

        copy32 = copy.deepcopy(pipe.vae).to(torch.float32)
        _FP32_VAES[pipe.vae] = copy32
    return copy32


def _memory_mb(field: str = "VmHWM") -> float:
    """This process's peak (``VmHWM``) or current (``VmRSS``) resident memory in MB. Linux's
    ``/proc`` figures belong to this address space; ``getrusage``'s peak, the fallback elsewhere,
    survives exec and so can be the parent's."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def _run_dtype(model: str, dtype: str, device: str, specs: list[GenerationSpec], load_options: dict) -> dict:
    """Load ``model`` in ``dtype`` and make every spec's images (one warm-up image first):
    uint8 images, seconds per image, and memory (the process's resident memory before loading,
    its peak after generating; the CUDA allocator's peak on a GPU)."""
    import torch

    import diffusers  # noqa: F401  (imported before the baseline is read)

    from .generate import generate
    from .models import load_pipeline

    before = _memory_mb("VmRSS")
    pipe = load_pipeline(model, device=device, dtype=dtype, **load_options)
    cuda = str(pipe.device).startswith("cuda")
    generate(pipe, specs[0].replace(steps=1, batch_size=1))  # warm-up: one-time costs stay out of the timings
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    images, specs_out, seconds = [], [], []
    for spec in specs:
        result = generate(pipe, spec)
        images += [np.asarray(im.convert("RGB")) for im in result.images]
        specs_out += result.specs
        seconds += [result.timings["per_image"]] * len(result.images)
    return {
        "images": images, "specs": specs_out, "seconds": seconds,
        "rss_before_load_mb": before, "peak_rss_mb": _memory_mb(),
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan"),
    }


def _in_subprocess(*args) -> dict:
    """:func:`_run_dtype` in a fresh spawned process, so the peak memory is this dtype's alone."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_run_dtype, *args).result()


def measure_dtypes(
    model: str | os.PathLike, specs: list[GenerationSpec], dtypes: tuple[str, ...] = ("fp32", "bf16"),
    device: str = "cpu", measure: Measure | None = None, reference: str = "fp32", isolate: bool = True,
    load_options: dict | None = None, callback=None,
) -> pd.DataFrame:
    """One row per dtype and image: ``dtype``, ``image`` (its number), ``prompt``, ``seed``,
    ``seconds`` (per image), ``mean_abs_diff`` and ``max_abs_diff`` against the ``reference``
    dtype's image of the same spec (uint8 levels), ``blank`` (a uniform image: what NaN decodes
    to), ``rss_before_load_mb``, ``peak_rss_mb`` (None in-process: ``isolate=False`` shares one
    process), ``cuda_peak_mb``, and ``measure(image, spec)``'s columns.

    ``model`` is a name or path for :func:`sdlab.models.load_pipeline` (each dtype loads its own
    copy, with ``load_options``, e.g. ``{"vae": DIR}``); ``callback(done, total)`` counts dtypes.
    """
    specs = list(specs)
    dtypes = tuple(dtypes)
    validate_params({"dtypes": dtypes, "reference": reference, "specs": specs, "isolate": isolate}, MEASURE_CONSTRAINTS)
    if reference not in dtypes:
        raise invalid("reference", reference, f"one of the measured dtypes ({', '.join(dtypes)})")
    specs = [s.with_seed() for s in specs]  # every dtype draws the same noise
    runs = {}
    for i, dtype in enumerate(dtypes):
        args = (os.fspath(model), dtype, device, specs, dict(load_options or {}))
        runs[dtype] = _in_subprocess(*args) if isolate else _run_dtype(*args)
        if not isolate:
            runs[dtype]["rss_before_load_mb"] = runs[dtype]["peak_rss_mb"] = float("nan")
        if callback is not None:
            callback(i + 1, len(dtypes))
    rows = []
    for dtype in dtypes:
        run = runs[dtype]
        for k, (image, spec, seconds) in enumerate(zip(run["images"], run["specs"], run["seconds"])):
            diff = np.abs(image.astype(np.int16) - runs[reference]["images"][k].astype(np.int16))
            row = {"dtype": dtype, "image": k, "prompt": spec.prompt, "seed": spec.seed, "seconds": seconds,
                   "mean_abs_diff": float(diff.mean()), "max_abs_diff": int(diff.max()), "blank": bool(np.ptp(image) <= 1),
                   **{key: run[key] for key in ("rss_before_load_mb", "peak_rss_mb", "cuda_peak_mb")}}
            if measure is not None:
                row.update(measure(image, spec))
            rows.append(row)
    return pd.DataFrame(rows)


def measure_means(table: pd.DataFrame, by: list[str], skip: set[str]) -> pd.DataFrame:
    """Per group of ``by``, the mean of every column outside ``skip`` whose values are numbers or
    true/false (a measure's ``all_ok``, ``shapes``...); None values are left out of the mean."""

    def scalar(value) -> bool:
        return isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating))

    columns = [c for c in table.columns if c not in skip and c not in by
               and table[c].notna().any() and table[c].dropna().map(scalar).all()]
    groups = table.groupby(by, sort=False, dropna=False)
    means = {c: groups[c].apply(lambda v: v.dropna().astype(float).mean()) for c in columns}
    return pd.DataFrame(means, index=groups.size().index)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """One row per dtype (in the table's order): images, median seconds per image, memory, mean and
    largest pixel difference, blank images, and the mean of every number or true/false the measure gave."""
    fixed = {"dtype", "image", "prompt", "seed", "seconds", "mean_abs_diff", "max_abs_diff", "blank",
             "rss_before_load_mb", "peak_rss_mb", "cuda_peak_mb"}
    groups = table.groupby("dtype", sort=False)
    out = pd.DataFrame({
        "images": groups.size(),
        "seconds_per_image": groups["seconds"].median(),
        "rss_before_load_mb": groups["rss_before_load_mb"].first(),
        "peak_rss_mb": groups["peak_rss_mb"].first(),
        "cuda_peak_mb": groups["cuda_peak_mb"].first(),
        "mean_abs_diff": groups["mean_abs_diff"].mean(),
        "max_abs_diff": groups["max_abs_diff"].max(),
        "blank": groups["blank"].sum(),
    })
    return out.join(measure_means(table, ["dtype"], fixed)).reset_index()
