"""The watermark lab: embed and detect SD's invisible watermarks, calibrate, attack, benchmark.

- :mod:`.codec` — presets, payloads, the ``invisible-watermark`` codec (the only place BGR exists)
- :mod:`.calibration` — the clean-image null of bits matched, p-values, measured FPR
- :mod:`.detection` — :func:`embed`, :func:`detect`, :class:`Detection`
- :mod:`.attacks` — JPEG, WebP, resize, rotation, crop, erasing, brightness, contrast, blur, noise, combinations, regeneration
- :mod:`.robustness` — :func:`battery`: images x methods x attacks x strengths, resumable; :mod:`.roc` and :mod:`.plots` read it

(The module is not called ``battery`` so that ``sdlab.watermark.battery`` is unambiguously the function.)
- :mod:`.treering` — a Tree-Ring in-generation watermark for any ``StableDiffusionPipeline``
- :mod:`.signature` — Stable Signature: a watermark in the VAE decoder (trained on images the caller passes in)
- :mod:`.cleanset` — the unmarked images behind the calibration, and the held-out photos the detection target is measured on

No module here imports the shapes world: where one wants its images (the signature's training data,
the calibration's flat-colour scenes), the caller passes them in, as the CLI and the panels do.
"""
from .attacks import ATTACKS, DEFAULT_ATTACKS, apply as attack, chain
from .robustness import PostHoc, battery, summarize
from .calibration import Calibration, bundled as bundled_calibration, calibrate
from .codec import METHODS, MIN_AREA, PRESETS, Payload, parse_payload
from .detection import Detection, detect, detect_all, embed
from .roc import auc, roc_curve, tpr_at_fpr

__all__ = [
    "ATTACKS", "DEFAULT_ATTACKS", "METHODS", "MIN_AREA", "PRESETS", "Calibration", "Detection", "Payload", "PostHoc",
    "attack", "auc", "battery", "bundled_calibration", "calibrate", "chain", "detect", "detect_all", "embed",
    "parse_payload", "roc_curve", "summarize", "tpr_at_fpr",
]
