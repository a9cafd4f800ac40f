"""Shapes-world measurements that the general labs take as arguments: the CLI, panels and notebooks pass them in.

- :func:`checker_metric` is a sweep metric (``(image, spec) -> dict``): per attribute the
  prompt names (the fine-tuning concepts' trigger words included), whether the checker finds it in the image;
- :func:`decision_steps` reads a denoising trace: from which step on the checker's reading
  of the predicted clean image stops changing.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from . import checker, concepts, world


def wanted(prompt: str) -> tuple[dict[str, str], bool]:
    """What ``prompt`` asks for, and whether it names a fine-tuning concept by its default trigger word: the world's
    attributes (:func:`.world.parse_caption`), plus what the concept fixes where the prompt's own words do not
    (``star``: the shape; ``outlined``: the style; ``sun``: a yellow circle; ``ruby``: red). A1111's ``<lora:...>``
    tags are not words, so a LoRA strength sweep of ``a large red star <lora:star:W>`` is judged on the star."""
    text = re.sub(r"<[^<>]*>", " ", prompt)
    words = set(re.findall(r"[a-z]+", text.lower()))
    named = [c for c in concepts.CONCEPTS.values() if c.token in words]
    fixed: dict[str, str] = {}
    for c in named:
        fixed.update({k: v for k, v in (("shape", c.shape), ("colour", c.colour)) if v})
        if c.style != "filled":
            fixed["style"] = c.style
    return {**fixed, **world.parse_caption(text)}, bool(named)


def checker_metric(image: np.ndarray, spec) -> dict:
    """Per attribute named in ``spec.prompt``, whether the image shows it; what the checker found; ``all_ok``.
    A prompt naming a concept (:func:`wanted`) is read by :func:`.concepts.check`, which knows the star and the
    style; any other by :func:`.checker.check`, the world's own reader (``found_style`` None)."""
    want, named = wanted(spec.prompt)
    found = concepts.check(image) if named else checker.check(image)
    out = {f"found_{a}": found.get(a) for a in concepts.ATTRIBUTES}
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
