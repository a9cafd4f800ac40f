"""The null distribution of bits matched, measured on clean images instead of assumed.

The decoder is biased: on an unmarked image each decoded bit is not a fair
coin. Photos mostly decode to all zeros; a flat colour decodes every bit to
the same value, 0 or 1 depending on its U (chroma) level; smooth textures
decode near 50/50. So "bits matched" on a clean image depends on the payload
(how many of its bits are 0) and on the image, and Binomial(n, 0.5) is wrong.

Model: for clean image ``i`` every bit decodes to 1 with its own rate
``pi_i`` (measured as the share of ones it decodes to, per method and payload
length). Given a payload with ``n1`` ones and ``n0`` zeros, bits matched on
image ``i`` is Binomial(n1, pi_i) + Binomial(n0, 1 - pi_i), and the null is
the mixture over the calibration images. Its tail gives p-values far below
1/N (the per-image binomials carry the tail), while the mixture keeps the
image-to-image spread. The false-positive rate is then measured on a second,
disjoint draw of clean images, not taken on trust.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import DataError, ValidationError
from ..io import atomic_write_text
from . import cleanset
from .codec import PRESETS, RIVAGAN_BITS, Decoder, Payload, check_method

Callback = Callable[[int, int], None]
BUNDLED = "watermark_calibration.json"
DEFAULT_LENGTHS = {"dwtDct": (136, 48, 32), "dwtDctSvd": (136, 48, 32), "rivaGan": (RIVAGAN_BITS,)}
QUICK_IMAGES = 120  # clean images used when a payload length has no stored calibration


def decode_ones(images: Iterable[np.ndarray], lengths: dict[str, tuple[int, ...]], callback: Callback | None = None,
                total: int = 0) -> dict[tuple[str, int], list[int]]:
    """For each (method, length): how many of the decoded bits are 1, per image."""
    ones: dict[tuple[str, int], list[int]] = {(m, n): [] for m, ns in lengths.items() for n in ns}
    for done, image in enumerate(images, 1):
        decoder = Decoder(image)
        for method, n in ones:
            ones[(method, n)].append(int(decoder.bits(method, n).sum()))
        if callback is not None:
            callback(done, total)
    return ones


@dataclass
class Calibration:
    """Per (method, payload length): the count of decoded ones on each clean calibration image."""

    ones: dict[tuple[str, int], np.ndarray]
    source: str = ""
    evaluation: dict = field(default_factory=dict)
    made_now: dict[tuple[str, int], str] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)

    def has(self, method: str, n_bits: int) -> bool:
        return (method, n_bits) in self.ones

    def n_images(self, method: str, n_bits: int) -> int:
        return len(self.ones[(method, n_bits)])

    def _ensure(self, method: str, n_bits: int) -> None:
        if self.has(method, n_bits):
            return
        images = (img for _, img in cleanset.clean_images(QUICK_IMAGES, seed=0))
        self.ones.update({k: np.asarray(v) for k, v in decode_ones(images, {method: (n_bits,)}).items()})
        self.made_now[(method, n_bits)] = (f"{method} with {n_bits} bits had no stored calibration; "
                                           f"calibrated now on {QUICK_IMAGES} clean images")

    def notes(self, method: str, n_bits: int) -> list[str]:
        """What a result using this (method, length) should say about its calibration."""
        return [self.made_now[(method, n_bits)]] if (method, n_bits) in self.made_now else []

    def null_pmf(self, payload: Payload, method: str) -> np.ndarray:
        """P(bits matched = k) for k = 0..n on a clean image, under the mixture model."""
        from scipy.stats import binom

        key = (payload.key, method)
        if key not in self._cache:
            check_method(method, payload)
            n = payload.n_bits
            self._ensure(method, n)
            rates = self.ones[(method, n)] / n
            n1 = int(sum(payload.bits))
            n0 = n - n1
            ones_ok = binom.pmf(np.arange(n1 + 1)[None], n1, rates[:, None])  # ones decoded as 1
            zeros_ok = binom.pmf(np.arange(n0 + 1)[None], n0, 1 - rates[:, None])  # zeros decoded as 0
            pmf = np.mean([np.convolve(a, b) for a, b in zip(ones_ok, zeros_ok)], axis=0)
            self._cache[key] = pmf / pmf.sum()
        return self._cache[key]

    def p_value(self, payload: Payload, method: str, matched: int) -> float:
        """P(a clean image matches at least ``matched`` bits)."""
        pmf = self.null_pmf(payload, method)
        return float(min(1.0, pmf[int(matched):].sum()))

    def threshold(self, payload: Payload, method: str, fpr: float) -> int:
        """Fewest bits matched that a clean image reaches with probability at most ``fpr``."""
        if not 0 < fpr < 1:
            raise ValidationError(f"fpr: {fpr} must be strictly between 0 and 1")
        tail = np.cumsum(self.null_pmf(payload, method)[::-1])[::-1]  # tail[k] = P(X >= k)
        ok = np.nonzero(tail <= fpr)[0]
        return int(ok[0]) if len(ok) else payload.n_bits + 1

    # -- files ----------------------------------------------------------------------------
    def to_json(self) -> dict:
        methods: dict[str, dict[str, list[int]]] = {}
        for (method, n), ones in sorted(self.ones.items()):
            methods.setdefault(method, {})[str(n)] = [int(x) for x in ones]
        return {"version": 1, "source": self.source, "ones": methods, "evaluation": self.evaluation}

    @classmethod
    def from_json(cls, data: dict) -> "Calibration":
        if data.get("version") != 1 or "ones" not in data:
            raise DataError("calibration: not an sdlab watermark calibration (version 1)")
        ones = {(m, int(n)): np.asarray(v) for m, per in data["ones"].items() for n, v in per.items()}
        return cls(ones, data.get("source", ""), data.get("evaluation", {}))

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        try:
            return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"calibration: cannot read {str(path)!r} ({exc})") from None


@lru_cache(maxsize=1)
def bundled() -> Calibration:
    """The calibration shipped in ``sdlab/data`` (recompute with :func:`calibrate`)."""
    text = resources.files("sdlab").joinpath("data", BUNDLED).read_text(encoding="utf-8")
    return Calibration.from_json(json.loads(text))


def measure_fpr(calibration: Calibration, images: Iterable[np.ndarray], fprs: tuple[float, ...] = (0.01, 0.001),
                methods: tuple[str, ...] = ("dwtDct", "dwtDctSvd")) -> list[dict]:
    """False-positive rate measured on ``images`` (unmarked, not used to calibrate): one record per preset payload x method x target."""
    images = list(images)
    decoders = [Decoder(img) for img in images]
    records = []
    targets = {name: p.payload for name, p in PRESETS.items()}
    for method in methods:
        for name, payload in targets.items():
            if method == "rivaGan" and payload.n_bits != RIVAGAN_BITS:
                continue
            pvals = np.array([calibration.p_value(payload, method, int((d.bits(method, payload.n_bits) == payload.array).sum()))
                              for d in decoders])
            for fpr in fprs:
                records.append({"payload": name, "method": method, "target_fpr": fpr,
                                "threshold_bits": calibration.threshold(payload, method, fpr),
                                "measured_fpr": float((pvals <= fpr).mean()), "n_images": len(images)})
    return records


def calibrate(n_images: int = 400, seed: int = 0, lengths: dict[str, tuple[int, ...]] | None = None,
              n_eval: int = 200, eval_seed: int = 1, rivagan_images: int = 60, progress: bool = False,
              callback: Callback | None = None, path: str | Path | None = None) -> Calibration:
    """Recompute the calibration: decode ``n_images`` clean images, then measure FPR on ``n_eval`` others.

    ``path`` saves it (atomically); the bundled file was made with the defaults.
    rivaGan runs about a second per image on a CPU, so it uses ``rivagan_images`` at 256-512 px.
    """
    from tqdm.auto import tqdm

    lengths = dict(lengths or DEFAULT_LENGTHS)
    for method in lengths:
        check_method(method)
    riva = {"rivaGan": lengths.pop("rivaGan")} if "rivaGan" in lengths else {}
    total = n_images + (rivagan_images if riva else 0) + n_eval
    bar = tqdm(total=total, desc="calibrate", disable=not progress)
    offset = 0

    def tick(done: int, _total: int) -> None:
        bar.n = offset + done
        bar.refresh()
        if callback is not None:
            callback(offset + done, total)

    ones = decode_ones((img for _, img in cleanset.clean_images(n_images, seed)), lengths, tick)
    offset += n_images
    if riva:
        small = (img for _, img in cleanset.clean_images(rivagan_images, seed + 100)
                 if img.shape[0] <= 512)
        ones.update(decode_ones(small, riva, tick))
        offset += rivagan_images
    cal = Calibration({k: np.asarray(v) for k, v in ones.items()},
                      source=f"sdlab.watermark.cleanset.clean_images(n={n_images}, seed={seed}); "
                             f"rivaGan: {rivagan_images} images, seed={seed + 100}, side <= 512")
    eval_images = (img for _, img in cleanset.clean_images(n_eval, eval_seed))
    evaluated = []
    for i, img in enumerate(eval_images, 1):
        evaluated.append(img)
        tick(i, total)
    cal.evaluation = {"source": f"clean_images(n={n_eval}, seed={eval_seed})",
                      "fpr": measure_fpr(cal, evaluated, methods=tuple(m for m in lengths))}
    bar.close()
    if path is not None:
        cal.save(path)
    return cal

