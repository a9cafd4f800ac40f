"""Shapes-world measurements that the general labs take as arguments: the CLI, panels and notebooks pass them in.

- :func:`checker_metric` is a sweep metric (``(image, spec) -> dict``): per attribute the
  prompt names, whether the attribute checker finds it in the image;
- :func:`decision_steps` reads a denoising trace: from which step on the checker's reading
  of the predicted clean image stops changing.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import checker, world


def checker_metric(image: np.ndarray, spec) -> dict:
    """Per attribute named in ``spec.prompt``, whether the image shows it; what the checker found; ``all_ok``."""
    want, found = world.parse_caption(spec.prompt), checker.check(image)
    out = {f"found_{a}": found[a] for a in checker.ATTRIBUTES}
    for a, value in want.items():
        out[f"{a}_ok"] = found[a] == value
    out["all_ok"] = all(found[a] == v for a, v in want.items()) if want else None
    return out


def decision_steps(trace, pipe) -> pd.DataFrame:
    """Per attribute, the first step from which the checker's reading of the decoded x0 no longer changes.

    ``trace`` is a :class:`sdlab.trace.Trace` of a shapes-world generation. Returns a tidy
    DataFrame: one row per step and attribute with the reading, plus ``decided_at``.
    """
    readings = [checker.check(np.asarray(trace.preview(i, "x0", "vae", pipe))) for i in range(len(trace.steps))]
    final = checker.check(np.asarray(trace.image))
    rows = []
    for attribute in checker.ATTRIBUTES:
        values = [r[attribute] for r in readings]
        decided = len(values)
        while decided > 0 and values[decided - 1] == final[attribute]:
            decided -= 1
        for i, value in enumerate(values):
            rows.append({"step": i + 1, "attribute": attribute, "reading": value, "final": final[attribute],
                         "decided_at": decided + 1 if decided < len(values) else None})
    return pd.DataFrame(rows)


def sweep_metrics(pipe) -> dict | None:
    """The metrics a sweep of ``pipe`` records: for the shapes world, the generic ones plus the checker;
    for any other model None (the sweep's defaults). What the CLI, panels and notebooks hand ``run_sweep``."""
    from ..models import SHAPES_WORLD, model_info
    from ..sweep import default_metrics

    if model_info(pipe).name != SHAPES_WORLD:
        return None
    return {**default_metrics(), "checker": checker_metric}
