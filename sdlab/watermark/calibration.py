"""The clean-image null, measured instead of assumed, for two tests of a payload.

The decoder is biased: on an unmarked image each decoded bit is not a fair
coin. Photos mostly decode to all zeros; a flat colour decodes every bit to
the same value, 0 or 1 depending on its U (chroma) level; smooth textures
decode near 50/50. So "bits matched" on a clean image depends on the payload
(how many of its bits are 0) and on the image, and Binomial(n, 0.5) is wrong.

**Bits matched** (the library's decode; the published SDXL rule counts these).
For clean image ``i`` every bit decodes to 1 with its own rate ``pi_i`` (the
share of ones it decodes to, per method and payload length). Given a payload
with ``n1`` ones and ``n0`` zeros, bits matched on image ``i`` is
Binomial(n1, pi_i) + Binomial(n0, 1 - pi_i), and the null is the mixture over
the calibration images.

**Vote contrast** (what ``detected`` and ``p_value`` use for dwtDct and
dwtDctSvd). Each bit is a vote of many blocks; ``m_k`` is the share of bit
``k``'s blocks that vote 1. The statistic is the two-sample t of ``m_k``
between the payload's 1-bits and its 0-bits: a marked image has its 1-bits'
blocks voting 1 more often than its 0-bits' blocks. Why not bits matched:
dwtDct writes a 0 by *lowering* the block's largest coefficient, and in a
smooth block another coefficient then becomes the largest, so the 0 is not
read back; where the image's own votes lean to 1 (clean vote rate above 1/2)
every 0-bit then decodes as 1 and a marked image matches no more bits than a
clean one. Its 1-bits still vote 1 nearly everywhere, which the contrast sees.
The image's own bias cancels in the difference. Null: for clean image ``i``
the statistic is Student-t (n - 2 degrees of freedom) scaled by ``s_i``, the
RMS of the statistic over the payload's cyclic shifts on that image (shifts
keep the payload's runs, which is what can line up with smooth structure in
an image); the null is the mixture over the calibration images, a flat image
(all votes equal) contributing a statistic of exactly 0.

In both, the per-image parametric law carries the tail far below 1/N while the
mixture keeps the image-to-image spread. The false-positive rate is then
measured on a second, disjoint draw of clean images, not taken on trust; the
detection target itself is measured on held-out photos
(:func:`sdlab.watermark.cleanset.evaluation_photos`), never used here.

File format (version 2): per DWT method and payload length, each calibration
image's block count and, zlib-compressed and base64-encoded as little-endian
uint16 in image-major order, its per-bit counts of blocks voting 1; rivaGan
(no blocks) stores each image's count of decoded ones.
"""
from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import DataError
from ..io import atomic_write_text
from ..progress import Callback, Reporter
from ..validation import NON_NEGATIVE_INT, POSITIVE_INT, Interval, invalid, validate_params
from . import cleanset
from .cleanset import SceneSource
from .codec import LIBRARY, PRESETS, RIVAGAN_BITS, Decoder, Payload, Reading, bits_from_counts, block_totals, check_method

BUNDLED = "watermark_calibration.json"
DEFAULT_LENGTHS = {"dwtDct": (136, 48, 32), "dwtDctSvd": (136, 48, 32), "rivaGan": (RIVAGAN_BITS,)}
VOTE_METHODS = ("dwtDct", "dwtDctSvd")
QUICK_IMAGES = 120  # clean images used when a payload length has no stored calibration
FPR = Interval(float, 0, 1, closed="neither")
CONTRAST, BITS = "vote contrast", "bits matched"
MAX_CONTRAST = 1000.0  # the statistic is capped here (and given here for a perfect separation): keeps it finite for JSON


def contrast(ones: np.ndarray, totals: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Two-sample t of the per-bit vote shares between the payload's 1-bits and 0-bits.

    ``ones`` and ``totals`` are (..., n) counts; ``bits`` is (n,) or (S, n) (then
    the result gains an axis of S payloads before the last). Where every vote
    share within each group is the same: 0 if the groups agree (a flat clean
    image), else +-MAX_CONTRAST (a flat image marked: perfect separation).
    """
    m = ones / np.maximum(totals, 1)
    b = np.atleast_2d(np.asarray(bits, dtype=np.float64))  # (S, n)
    n = b.shape[-1]
    n1 = b.sum(axis=-1)
    n0 = n - n1
    s1, s0 = m @ b.T, m @ (1 - b).T  # (..., S)
    q1, q0 = (m * m) @ b.T, (m * m) @ (1 - b).T
    ss = np.maximum(q1 - s1**2 / n1 + q0 - s0**2 / n0, 0.0)
    sd = np.sqrt(ss / (n - 2))
    diff = s1 / n1 - s0 / n0
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(sd > 1e-9, diff / (sd * np.sqrt(1 / n1 + 1 / n0)), np.sign(np.round(diff, 9)) * MAX_CONTRAST)
    z = np.clip(z, -MAX_CONTRAST, MAX_CONTRAST)
    return z[..., 0] if np.ndim(bits) == 1 else z


def contrast_applies(payload: Payload, method: str) -> bool:
    """The vote contrast needs block votes and a payload with both 0 and 1 bits (and at least 4 of them)."""
    n1 = sum(payload.bits)
    return method in VOTE_METHODS and 0 < n1 < payload.n_bits and payload.n_bits >= 4


def _shifts(bits: np.ndarray) -> np.ndarray:
    """The payload's distinct non-trivial cyclic shifts (S, n); the payload itself if it has none."""
    rolled = [np.roll(bits, s) for s in range(1, len(bits))]
    distinct = [r for r in rolled if not np.array_equal(r, bits)]
    return np.array(distinct or [bits])


def decode_counts(images: Iterable[np.ndarray], lengths: dict[str, tuple[int, ...]], callback: Callback | None = None,
                  total: int = 0) -> tuple[dict, dict]:
    """Per (method, length): ``votes`` (per-bit ones, blocks) for block methods, ``ones`` (decoded ones) for rivaGan."""
    votes: dict[tuple[str, int], tuple[list, list]] = {}
    ones: dict[tuple[str, int], list[int]] = {}
    for done, image in enumerate(images, 1):
        decoder = Decoder(image)
        for method, ns in lengths.items():
            for n in ns:
                if method in VOTE_METHODS:
                    c, t = decoder.counts(method, n)
                    rows, blocks = votes.setdefault((method, n), ([], []))
                    rows.append(c)
                    blocks.append(int(t.sum()))
                else:
                    ones.setdefault((method, n), []).append(int(decoder.bits(method, n).sum()))
        if callback is not None:
            callback(done, total)
    return ({k: (np.asarray(r, dtype=np.int64), np.asarray(b, dtype=np.int64)) for k, (r, b) in votes.items()},
            {k: np.asarray(v) for k, v in ones.items()})


@lru_cache(maxsize=16)
def quick_counts(method: str, n_bits: int, scenes: SceneSource | None = None) -> tuple[tuple | None, np.ndarray]:
    """A calibration made now, for a length none is stored for: ``(votes or None, ones)`` on
    :data:`QUICK_IMAGES` clean images (``scenes``: see :func:`cleanset.clean_images`); made once per process."""
    images = (img for _, img in cleanset.clean_images(QUICK_IMAGES, seed=0, scenes=scenes))
    votes, ones = decode_counts(images, {method: (n_bits,)})
    if (method, n_bits) not in votes:
        return None, ones[(method, n_bits)]
    counts, blocks = votes[(method, n_bits)]
    return votes[(method, n_bits)], bits_from_counts(counts, block_totals(blocks, n_bits)).sum(axis=1)


@dataclass
class Outcome:
    """One payload tested on one image."""

    test: str  # CONTRAST or BITS: which statistic p_value comes from
    bits: np.ndarray
    matched: int
    statistic: float  # the vote contrast (NaN when the bits test is used)
    p_value: float  # of the test above
    bits_p_value: float  # bits matched against its own null, always


@dataclass
class Calibration:
    """Per (method, payload length): what each clean calibration image decoded to.

    ``ones``: decoded ones per image (the bits-matched null; derived from ``votes`` for
    block methods). ``votes``: per-image per-bit counts of blocks voting 1, and blocks per image.
    A (method, length) with nothing stored is calibrated when first asked for (:func:`quick_counts`,
    on clean images with ``scenes``' flat-colour scenes among them when given); that never changes
    what is stored, so one calibration can be shared.
    """

    ones: dict[tuple[str, int], np.ndarray]
    source: str = ""
    evaluation: dict = field(default_factory=dict)
    votes: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    scenes: SceneSource | None = field(default=None, repr=False, compare=False)
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # nulls derived per payload

    def __post_init__(self) -> None:
        for (method, n), (counts, blocks) in self.votes.items():
            if (method, n) not in self.ones:
                self.ones[(method, n)] = bits_from_counts(counts, block_totals(blocks, n)).sum(axis=1)

    def has(self, method: str, n_bits: int, votes: bool = False) -> bool:
        return (method, n_bits) in (self.votes if votes else self.ones)

    def n_images(self, method: str, n_bits: int) -> int:
        return len(self.ones_for(method, n_bits))

    def ones_for(self, method: str, n_bits: int) -> np.ndarray:
        """Decoded ones per clean image: stored, or calibrated now."""
        if self.has(method, n_bits):
            return self.ones[(method, n_bits)]
        return quick_counts(method, n_bits, self.scenes)[1]

    def votes_for(self, method: str, n_bits: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-bit counts of blocks voting 1, and blocks, per clean image: stored, or calibrated now."""
        if self.has(method, n_bits, votes=True):
            return self.votes[(method, n_bits)]
        return quick_counts(method, n_bits, self.scenes)[0]

    def notes(self, method: str, n_bits: int) -> list[str]:
        """What a result using this (method, length) should say about its calibration."""
        if self.has(method, n_bits) and (method not in VOTE_METHODS or self.has(method, n_bits, votes=True)):
            return []
        kinds = "photos, scenes and textures" if self.scenes is not None else "photos and textures"
        return [f"{method} with {n_bits} bits had no stored calibration; calibrated now on {QUICK_IMAGES} clean images ({kinds})"]

    # -- bits matched --------------------------------------------------------------------
    def null_pmf(self, payload: Payload, method: str) -> np.ndarray:
        """P(bits matched = k) for k = 0..n on a clean image, under the mixture model."""
        from scipy.stats import binom

        key = ("pmf", payload.key, method)
        if key not in self._cache:
            check_method(method, payload)
            n = payload.n_bits
            rates = self.ones_for(method, n) / n
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
        validate_params({"fpr": fpr}, {"fpr": [FPR]})
        tail = np.cumsum(self.null_pmf(payload, method)[::-1])[::-1]  # tail[k] = P(X >= k)
        ok = np.nonzero(tail <= fpr)[0]
        return int(ok[0]) if len(ok) else payload.n_bits + 1

    # -- vote contrast -------------------------------------------------------------------
    def scales(self, payload: Payload, method: str) -> np.ndarray:
        """Per calibration image: RMS of the vote contrast over the payload's cyclic shifts (0: a flat image)."""
        key = ("scales", payload.key, method)
        if key not in self._cache:
            n = payload.n_bits
            counts, blocks = self.votes_for(method, n)
            z = contrast(counts, block_totals(blocks, n), _shifts(payload.array))  # (images, shifts)
            self._cache[key] = np.sqrt(np.mean(z**2, axis=1))
        return self._cache[key]

    def contrast_p_value(self, payload: Payload, method: str, statistic: float) -> float:
        """P(a clean image's vote contrast >= ``statistic``): a mixture of scaled Student-t laws."""
        from scipy.stats import t as student

        scales = self.scales(payload, method)
        live = scales > 1e-9
        tails = np.where(live, student.sf(statistic / np.where(live, scales, 1.0), payload.n_bits - 2),
                         float(statistic <= 0))  # a flat image's statistic is exactly 0
        return float(min(1.0, max(tails.mean(), 0.0)))

    # -- both ----------------------------------------------------------------------------
    def test(self, decoder: Decoder, payload: Payload, method: str, reading: Reading = LIBRARY) -> Outcome:
        """Decode ``payload``'s bits from an image under ``reading`` and test them (the contrast where it applies).

        The clean-image null is the one measured for the library's reading; the other readings' false-positive
        rates on clean images, measured against it, stay at their targets (tests/test_watermark.py)."""
        if method in VOTE_METHODS:
            ones, totals = decoder.counts(method, payload.n_bits, reading)
            bits = bits_from_counts(ones, totals)
        else:
            bits = decoder.bits(method, payload.n_bits)
        matched = int((bits == payload.array).sum())
        bits_p = self.p_value(payload, method, matched)
        if contrast_applies(payload, method):
            z = float(contrast(ones, totals, payload.array))
            return Outcome(CONTRAST, bits, matched, z, self.contrast_p_value(payload, method, z), bits_p)
        return Outcome(BITS, bits, matched, float("nan"), bits_p, bits_p)

    # -- files ----------------------------------------------------------------------------
    def to_json(self) -> dict:
        votes: dict[str, dict[str, dict]] = {}
        for (method, n), (counts, blocks) in sorted(self.votes.items()):
            packed = base64.b64encode(zlib.compress(np.asarray(counts, dtype="<u2").tobytes(), 9)).decode("ascii")
            votes.setdefault(method, {})[str(n)] = {"blocks": [int(b) for b in blocks], "ones_per_bit": packed}
        ones: dict[str, dict[str, list[int]]] = {}
        for (method, n), values in sorted(self.ones.items()):
            if (method, n) not in self.votes:
                ones.setdefault(method, {})[str(n)] = [int(x) for x in values]
        return {"version": 2, "source": self.source, "votes": votes, "ones": ones, "evaluation": self.evaluation}

    @classmethod
    def from_json(cls, data: dict) -> "Calibration":
        if data.get("version") not in (1, 2) or "ones" not in data:
            raise DataError("calibration: not an sdlab watermark calibration (version 1 or 2)")
        ones = {(m, int(n)): np.asarray(v) for m, per in data["ones"].items() for n, v in per.items()}
        votes = {}
        for method, per in data.get("votes", {}).items():
            for n, rec in per.items():
                blocks = np.asarray(rec["blocks"], dtype=np.int64)
                raw = np.frombuffer(zlib.decompress(base64.b64decode(rec["ones_per_bit"])), dtype="<u2")
                votes[(method, int(n))] = (raw.astype(np.int64).reshape(len(blocks), int(n)), blocks)
        return cls(ones, data.get("source", ""), data.get("evaluation", {}), votes)

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        try:
            return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, KeyError, ValueError, zlib.error) as exc:
            raise DataError(f"calibration: cannot read {str(path)!r} ({exc})") from None


@lru_cache(maxsize=1)
def _shipped() -> Calibration:
    text = resources.files("sdlab").joinpath("data", BUNDLED).read_text(encoding="utf-8")
    return Calibration.from_json(json.loads(text))


def bundled(scenes: SceneSource | None = None) -> Calibration:
    """The calibration shipped in ``sdlab/data`` (recompute with :func:`calibrate`), read once and shared.

    ``scenes``: where a length it does not store is calibrated from (see :class:`Calibration`).
    """
    shipped = _shipped()
    return shipped if scenes is None else replace(shipped, scenes=scenes)


def measure_fpr(calibration: Calibration, images: Iterable[np.ndarray], fprs: tuple[float, ...] = (0.01, 0.001),
                methods: tuple[str, ...] = ("dwtDct", "dwtDctSvd")) -> list[dict]:
    """False-positive rate measured on ``images`` (unmarked, not used to calibrate): one record per preset payload
    x method x target, for the test ``detect`` uses (``measured_fpr``) and for bits matched alone (``bits_measured_fpr``)."""
    images = list(images)
    decoders = [Decoder(img) for img in images]
    records = []
    for method in methods:
        for name, preset in PRESETS.items():
            payload = preset.payload
            if method == "rivaGan" and payload.n_bits != RIVAGAN_BITS:
                continue
            results = [calibration.test(d, payload, method) for d in decoders]
            pvals = np.array([r.p_value for r in results])
            bits_p = np.array([r.bits_p_value for r in results])
            for fpr in fprs:
                records.append({"payload": name, "method": method, "test": results[0].test, "target_fpr": fpr,
                                "measured_fpr": float((pvals <= fpr).mean()),
                                "threshold_bits": calibration.threshold(payload, method, fpr),
                                "bits_measured_fpr": float((bits_p <= fpr).mean()), "n_images": len(images)})
    return records


_MOST = Interval(int, 1, 20_000)  # 0.1-0.2 s an image on a 2-core CPU: 20,000 is about an hour; 10^7 would run for weeks
CALIBRATE_CONSTRAINTS = {"n_images": [_MOST], "seed": [NON_NEGATIVE_INT], "n_eval": [_MOST],
                         "eval_seed": [NON_NEGATIVE_INT], "rivagan_images": [Interval(int, 0, 20_000)]}


def calibrate(n_images: int = 400, seed: int = 0, lengths: dict[str, tuple[int, ...]] | None = None,
              n_eval: int = 200, eval_seed: int = 1, rivagan_images: int = 60, progress: bool = False,
              callback: Callback | None = None, path: str | Path | None = None,
              scenes: SceneSource | None = None) -> Calibration:
    """Recompute the calibration: decode ``n_images`` clean images, then measure FPR on ``n_eval`` others.

    ``scenes`` puts flat-colour scenes among the clean images (:func:`cleanset.clean_images`; the
    bundled file was made with the defaults and the shapes world's scenes, as ``sdlab watermark
    calibrate`` does). ``path`` saves it (atomically). rivaGan runs about a second per image on
    a CPU, so it uses ``rivagan_images`` at 256-512 px.
    """
    validate_params({"n_images": n_images, "seed": seed, "n_eval": n_eval, "eval_seed": eval_seed,
                     "rivagan_images": rivagan_images}, CALIBRATE_CONSTRAINTS)
    lengths = dict(lengths or DEFAULT_LENGTHS)
    for method in lengths:
        check_method(method)
    if seed == eval_seed:
        raise invalid("eval_seed", eval_seed, f"a seed other than seed ({seed}), so the FPR is measured on other images")
    riva = {"rivaGan": lengths.pop("rivaGan")} if "rivaGan" in lengths else {}
    total = n_images + (rivagan_images if riva else 0) + n_eval
    offset = 0
    with Reporter(callback, progress, desc="calibrate") as reporter:

        def tick(done: int, _total: int) -> None:
            reporter(offset + done, total)

        def clean(n: int, seed: int) -> Iterable[np.ndarray]:
            return (img for _, img in cleanset.clean_images(n, seed, scenes=scenes))

        votes, ones = decode_counts(clean(n_images, seed), lengths, tick)
        offset += n_images
        if riva:
            ones.update(decode_counts((img for img in clean(rivagan_images, seed + 100) if img.shape[0] <= 512), riva, tick)[1])
            offset += rivagan_images
        riva_used = len(ones.get(("rivaGan", RIVAGAN_BITS), []))
        with_scenes = f", scenes={getattr(scenes, '__name__', type(scenes).__name__)}" if scenes is not None else ", no scenes"
        cal = Calibration(ones, source=f"sdlab.watermark.cleanset.clean_images(n={n_images}, seed={seed}{with_scenes}); "
                                       f"rivaGan: the {riva_used} of {rivagan_images} images (seed={seed + 100}) with side <= 512",
                          votes=votes, scenes=scenes)
        evaluated = []
        for i, img in enumerate(clean(n_eval, eval_seed), 1):
            evaluated.append(img)
            tick(i, total)
        cal.evaluation = {"source": f"clean_images(n={n_eval}, seed={eval_seed}{with_scenes})",
                          "fpr": measure_fpr(cal, evaluated, methods=tuple(m for m in lengths))}
    if path is not None:
        cal.save(path)
    return cal
