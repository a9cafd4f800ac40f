"""ROC curves and TPR at a fixed FPR from clean (negative) and marked (positive) scores, as WAVES reports them."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..validation import invalid


def roc_curve(negatives: Sequence[float], positives: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): a score >= threshold is called marked; one point per distinct score, from (0, 0)."""
    neg = np.asarray(negatives, dtype=float)
    pos = np.asarray(positives, dtype=float)
    for name, scores in (("negatives", neg), ("positives", pos)):
        if len(scores) == 0 or np.isnan(scores).any():
            raise invalid(name, scores.tolist(), "one or more scores, none of them NaN")
    thresholds = np.unique(np.concatenate([neg, pos]))[::-1]
    fpr = np.array([(neg >= t).mean() for t in thresholds])
    tpr = np.array([(pos >= t).mean() for t in thresholds])
    return np.r_[0.0, fpr], np.r_[0.0, tpr], np.r_[np.inf, thresholds]


def tpr_at_fpr(negatives: Sequence[float], positives: Sequence[float], fpr: float) -> float:
    """Highest TPR among ROC points whose FPR is at most ``fpr``."""
    f, t, _ = roc_curve(negatives, positives)
    return float(t[f <= fpr + 1e-12].max())


def auc(negatives: Sequence[float], positives: Sequence[float]) -> float:
    """Area under the ROC curve (ties count one half)."""
    neg = np.asarray(negatives, dtype=float)[:, None]
    pos = np.asarray(positives, dtype=float)[None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())
