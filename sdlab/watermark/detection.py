"""embed and detect: the public face of the post-hoc watermarks (RGB in, RGB out)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..images import ImageLike
from ..validation import invalid, validate_params
from .calibration import FPR, Calibration, bundled
from .codec import LIBRARY, PRESETS, Decoder, PayloadLike, codec_input, embed_array, resolve

# 0.1 %: with the operating point at the target FPR itself (1 %), the measured FPR on a finite set sits at 1 % on
# average and above it about half the time; marked images score p far below 1e-10, so 0.1 % costs no TPR.
DEFAULT_FPR = 0.001
# Published SDXL rule on bits matched out of 48: <=27 none, 28-33 partial, 34-35 likely, >=36 very likely.
SDXL_RULE = ((36, "very likely"), (34, "likely"), (28, "partial"), (0, "none"))


@dataclass
class Detection:
    """What one payload/method test found in one image."""

    preset: str
    method: str
    payload: str
    bits_matched: int
    bits_total: int
    bit_accuracy: float
    p_value: float
    fpr: float
    threshold_bits: int
    detected: bool
    decision: str
    test: str = "bits matched"  # which statistic p_value comes from: "vote contrast" or "bits matched"
    statistic: float = float("nan")  # the vote contrast (a t statistic), NaN for the bits test
    bits_p_value: float = float("nan")  # bits matched against the calibrated bits-matched null
    bits: str = ""
    notes: list[str] = field(default_factory=list)
    channel_order: str = "bgr"  # how the marking code handed the image to the encoder: "bgr" (as documented) or "rgb"
    encoder_dtype: str = "uint8"  # ... and as which dtype ("float32": diffusers); see sdlab.watermark.codec
    readings: int = 1  # how many (channel order, dtype) readings were tried: p-values are multiplied by it

    @property
    def confidence(self) -> float:
        """1 - p-value: how unlikely these matches are on a clean image."""
        return 1.0 - self.p_value

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        verdict = ("detected" if self.detected else "not detected") + f" at {self.fpr:.2g} FPR"
        rule = f" (published rule: {self.decision})" if self.preset == "sdxl" else ""
        order = f", encoder given {self.channel_order.upper()} {self.encoder_dtype}" if self.readings > 1 and self.detected else ""
        return (f"{self.preset} ({self.method}{order}): {self.bits_matched}/{self.bits_total} bits{rule}, "
                f"{self.test} p={self.p_value:.2g}, {verdict}")


def sdxl_decision(matched: int) -> str:
    """The published SDXL rule (48 bits)."""
    return next(label for low, label in SDXL_RULE if matched >= low)


def embed(image: ImageLike, preset: str | None = None, payload: PayloadLike | None = None, method: str | None = None,
          upscale: bool = False) -> np.ndarray:
    """Return an RGB uint8 copy of ``image`` carrying a preset's payload (or a custom one with ``method``)."""
    _, parsed, method = resolve(preset, payload, method)
    rgb, _ = codec_input(image, upscale=upscale, n_bits=parsed.n_bits)
    return embed_array(rgb, parsed, method)


def _test(decoder: Decoder, name: str, payload, method: str, fpr: float, calibration: Calibration,
          notes: list[str]) -> Detection:
    """Test every reading the preset's mark is written with (one for custom payloads) and keep the best.

    Bonferroni: each reading's p-value is multiplied by the number of readings k (capped at 1), so the chance
    that a clean image passes ``fpr`` under any of them stays at most ``fpr``; the bits threshold is the one
    at ``fpr / k``.
    """
    readings = PRESETS[name].readings if name in PRESETS else (LIBRARY,)
    k = len(readings)
    outcomes = [(calibration.test(decoder, payload, method, r), r) for r in readings]
    outcome, (order, dtype) = min(outcomes, key=lambda o: (o[0].p_value, -np.nan_to_num(o[0].statistic, nan=0.0)))
    p_value, bits_p_value = min(1.0, k * outcome.p_value), min(1.0, k * outcome.bits_p_value)
    detected = p_value <= fpr
    decision = sdxl_decision(outcome.matched) if name == "sdxl" else ("detected" if detected else "not detected")
    return Detection(
        preset=name, method=method, payload=payload.label, bits_matched=outcome.matched, bits_total=payload.n_bits,
        bit_accuracy=outcome.matched / payload.n_bits, p_value=p_value, fpr=fpr,
        threshold_bits=calibration.threshold(payload, method, fpr / k), detected=bool(detected), decision=decision,
        test=outcome.test, statistic=outcome.statistic, bits_p_value=bits_p_value,
        bits="".join(map(str, outcome.bits)), notes=list(notes) + calibration.notes(method, payload.n_bits),
        channel_order=order, encoder_dtype=dtype, readings=k,
    )


def detect(image: ImageLike, preset: str | None = None, payload: PayloadLike | None = None, method: str | None = None,
           fpr: float = DEFAULT_FPR, upscale: bool = False, calibration: Calibration | None = None) -> Detection | list[Detection]:
    """Test ``image`` for a preset or payload; with neither, test every preset and return a list.

    ``detected`` means the p-value against the calibrated clean-image null is at
    most ``fpr`` (default 0.1 %). ``sdxl`` is read both ways its mark was written
    (encoder handed BGR or RGB, uint8 or float32: see :mod:`.codec`), the best
    reading kept and its p-value multiplied by the 4 readings tried (Bonferroni),
    so trying them costs no false positives; ``channel_order`` says which order
    matched. For dwtDct and dwtDctSvd the p-value is the
    vote contrast's (see :mod:`.calibration`), which finds marks whose 0-bits the
    library's decoder reads back as 1; ``bits_p_value`` is bits matched against
    its own null. For ``sdxl``, ``decision`` follows the published rule on bits
    matched, which such marks can fail: compare it with ``detected``.
    """
    validate_params({"fpr": fpr}, {"fpr": [FPR]})
    calibration = calibration or bundled()
    if method is not None and payload is None and preset is None:
        raise invalid("method", method, "None unless a payload is given (each preset fixes its own method)")
    targets = [resolve(name) for name in PRESETS] if preset is None and payload is None else [resolve(preset, payload, method)]
    n_max = max(p.n_bits for _, p, _ in targets)
    rgb, notes = codec_input(image, upscale=upscale, n_bits=n_max)
    decoder = Decoder(rgb)
    results = [_test(decoder, name, p, m, fpr, calibration, notes) for name, p, m in targets]
    return results if preset is None and payload is None else results[0]


def detect_all(image: ImageLike, fpr: float = DEFAULT_FPR, upscale: bool = False) -> list[Detection]:
    """Every preset's result for one image."""
    return detect(image, fpr=fpr, upscale=upscale)  # type: ignore[return-value]
