"""Rate–distortion sweeps: every image x codec x byte budget, measured, in one tidy table.

Each codec is fitted to each budget with ``encode_to_budget`` (highest quality
that fits), decoded, and scored, so rows compare codecs at matched sizes. A
codec that cannot run here yields rows with ``status = "not installed: ..."``
and a budget below a codec's smallest output yields ``status = "over budget"``
(the metrics are NaN), so a sweep never crashes half way for want of a library.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..images import ImageLike, load_rgb
from ..metrics import bits_per_pixel, ms_ssim, psnr, ssim
from ..progress import Callback, Reporter
from ..validation import POSITIVE_INT, Check, Options, invalid, validate_params
from . import classical
from .base import BudgetTooSmall, Codec

CLASSICAL = {"jpeg": classical.jpeg, "jpeg444": lambda: classical.jpeg("4:4:4"), "webp": classical.webp,
             "avif": classical.avif, "jxl": classical.jxl}
LATENT = ("vae", "vae-levels")  # vae: Bühlmann's palette + dithering; vae-levels: uniform levels only
CODEC_NAMES = tuple(CLASSICAL) + LATENT
DEFAULT_CODECS = ("vae", "jpeg", "webp", "avif", "jxl")
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"psnr": psnr, "ssim": ssim, "ms_ssim": ms_ssim}
COLUMNS = ["image", "codec", "budget", "status", "bytes", "bpp", "quality", "width", "height",
           "encode_s", "decode_s"]


def get_codec(name: str, vae: Any = None, **options: Any) -> Codec:
    """A codec by name: jpeg, jpeg444, webp, avif, jxl, or vae / vae-levels (these need ``vae``)."""
    validate_params({"codec": name}, {"codec": [Options(CODEC_NAMES)]})
    if name in CLASSICAL:
        return CLASSICAL[name](**options)
    if vae is None:
        raise invalid("vae", vae, f"an AutoencoderKL: codec {name!r} needs one (pass vae=...)")
    from .latent import LatentCodec

    return LatentCodec(vae, palette=name == "vae", **options)


def _codecs(codecs: Mapping[str, Codec] | Sequence[Codec | str], vae: Any) -> dict[str, Codec]:
    if isinstance(codecs, Mapping):
        return dict(codecs)
    out = {}
    for c in codecs:
        codec = get_codec(c, vae) if isinstance(c, str) else c
        out[codec.name] = codec
    return out


def _images(images: Mapping[str, ImageLike] | Sequence[ImageLike]) -> dict[str, np.ndarray]:
    if isinstance(images, Mapping):
        return {str(k): load_rgb(v) for k, v in images.items()}
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    return {f"image{i}": load_rgb(v) for i, v in enumerate(images)}


_BUDGETS = Check(lambda b: len(b) > 0 and all(POSITIVE_INT.accepts(x) for x in b), "a non-empty list of whole numbers >= 1")
RD_CONSTRAINTS = {
    "budgets": [_BUDGETS],
    "metrics": [Check(lambda ms: not isinstance(ms, str) and all(m in METRICS for m in ms),
                      f"a list of names among {', '.join(METRICS)}")],
    "keep_images": [bool],
    "callback": [Check(callable, "a function (done, total)"), None],
    "progress": [bool],
}


def rd_curves(images: Mapping[str, ImageLike] | Sequence[ImageLike], codecs: Mapping[str, Codec] | Sequence[Codec | str],
              budgets: Sequence[int], *, vae: Any = None, metrics: Sequence[str] = ("psnr", "ssim", "ms_ssim"),
              keep_images: bool = False, callback: Callback | None = None, progress: bool = False):
    """One row per image x codec x budget: bytes, bpp, quality and ``metrics`` at the best fit.

    ``images``: a dict name -> image, or a list (named image0, image1...).
    ``codecs``: names (see :func:`get_codec`; "vae" needs ``vae``) or Codec
    objects. ``keep_images`` adds a ``decoded`` column with the arrays.
    Latent codecs encode all images in one batched VAE pass first and decode
    each codec's outputs in one batched pass (``decode_s`` is the per-image
    share). Budget searches for one image share their encodings, and identical
    byte strings are decoded once, so ``encode_s`` of later budgets is smaller.
    """
    import pandas as pd

    validate_params({"budgets": budgets, "metrics": metrics, "keep_images": keep_images, "callback": callback,
                     "progress": progress}, RD_CONSTRAINTS)
    images, codecs = _images(images), _codecs(codecs, vae)
    if not images:
        raise invalid("images", images, "at least one image")
    total, done = len(images) * len(codecs) * len(budgets), 0
    rows: list[dict] = []
    with Reporter(callback, progress, desc="rd") as report:
        for codec_name, codec in codecs.items():
            reason = codec.unavailable_reason()
            pending: list[tuple[dict, bytes, np.ndarray]] = []
            if reason is None and hasattr(codec, "latents"):
                codec.latents(list(images.values()))  # one batched encoder pass, cached
            for image_name, image in images.items():
                h, w = image.shape[:2]
                encodings: dict[int, bytes] = {}  # quality -> bytes, shared by this image's budget searches
                for budget in budgets:
                    row = {"image": image_name, "codec": codec_name, "budget": int(budget), "status": "ok",
                           "bytes": math.nan, "bpp": math.nan, "quality": math.nan, "width": w, "height": h,
                           "encode_s": math.nan, "decode_s": math.nan, **{m: math.nan for m in metrics}}
                    if keep_images:
                        row["decoded"] = None
                    if reason is not None:
                        row["status"] = f"not installed: {reason}"
                    else:
                        t0 = time.perf_counter()
                        try:
                            enc = codec.encode_to_budget(image, int(budget), cache=encodings)
                        except BudgetTooSmall:
                            row["status"] = "over budget"
                        else:
                            row.update(bytes=enc.n_bytes, bpp=bits_per_pixel(enc.n_bytes, image.shape),
                                       quality=enc.quality, encode_s=time.perf_counter() - t0)
                            pending.append((row, enc.data, image))
                    rows.append(row)
                    done += 1
                    report(done, total)
            if pending:
                _decode_and_score(codec, pending, metrics, keep_images)
    return pd.DataFrame(rows, columns=COLUMNS + list(metrics) + (["decoded"] if keep_images else []))


def _decode_and_score(codec: Codec, pending: list[tuple[dict, bytes, np.ndarray]], metrics: Sequence[str],
                      keep_images: bool) -> None:
    """Decode one codec's encodings in one batched call and fill in each row's metrics and decode time."""
    t0 = time.perf_counter()
    unique = list(dict.fromkeys(p[1] for p in pending))  # budgets above the top quality repeat bytes
    by_data = dict(zip(unique, codec.decode_many(unique)))
    per_image = (time.perf_counter() - t0) / len(unique)
    scores: dict[bytes, dict[str, float]] = {}
    for row, data, image in pending:
        out = by_data[data]
        if data not in scores:
            scores[data] = {m: METRICS[m](image, out) for m in metrics}
        row["decode_s"] = per_image
        row.update(scores[data])
        if keep_images:
            row["decoded"] = out


def summarize(frame):
    """Mean rate and metrics per codec x budget over the images that fit (``images`` counts them)."""
    ok = frame[frame["status"] == "ok"]
    metrics = {m: (m, "mean") for m in METRICS if m in frame}
    return ok.groupby(["codec", "budget"], as_index=False).agg(
        images=("image", "size"), bytes=("bytes", "mean"), bpp=("bpp", "mean"), **metrics,
        encode_s=("encode_s", "mean"), decode_s=("decode_s", "mean"))
