"""What control does, measured against known truth: every image goes through sdlab's own ``generate``.

- :func:`fidelity`: IoU between the control's region (the truth mask handed in) and the generated shape
  (a ``region`` callable handed in), over control scales and start/end windows;
- :func:`zero_convolution`: before training a ControlNet adds nothing (scale 1 = no ControlNet, pixel
  for pixel), and scale 0 of a trained one changes no pixel;
- :func:`over_training`: fidelity of the ControlNets a run kept along the way (the paper's "sudden
  convergence": does fidelity jump rather than creep?);
- :func:`conflicts`: the prompt names one position or shape, the control draws another; who wins at
  which scale and guidance (a ``judge`` callable reads the image);
- :func:`keep_layout`: the shapes world's depth2img: keep an input image's layout while the prompt
  changes colour, by ControlNet on the image's own map, against img2img at several strengths.

Cases are dicts of arrays (``table`` with ``prompt`` and ``seed`` columns, ``maps`` uint8 (N, H, W, 3),
``masks`` bool (N, H, W)), as a world's data module makes them; this lab never reads a world itself.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from ..control.infotext import BALANCED, CONTROL_MODES, CONTROL_MORE, PROMPT_MORE
from ..progress import Callback
from ..validation import Check, Interval, invalid, validate_params

Region = Callable[[np.ndarray], np.ndarray]  # image (H, W, 3) uint8 -> bool (H, W): where the generated subject is
Judge = Callable[[np.ndarray], dict]  # image -> attributes it shows, e.g. {"position": "top left", "shape": "circle"}

DEFAULT_WINDOWS = ((0.0, 1.0), (0.0, 0.5), (0.0, 0.25), (0.25, 1.0), (0.5, 1.0))
DEFAULT_SCALES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = int((a | b).sum())
    return 1.0 if union == 0 else float((a & b).sum()) / union


def generate_one(
    pipe, prompt: str, seed: int, controlnet=None, control_map=None, scale: float = 1.0, start: float = 0.0, end: float = 1.0,
    guidance: float | None = None, steps: int | None = None, control_type: str = "edges", init_image=None, strength: float = 0.75,
    guess_mode: bool = False, prompt_more_important: bool = False,
) -> np.ndarray:
    """One image (uint8 H x W x 3) through :func:`sdlab.generate.generate`, with one ControlNet unit on a ready map when given."""
    from ..control.unit import ControlUnit
    from ..generate import generate
    from ..spec import GenerationSpec

    control = () if controlnet is None else (ControlUnit(image=control_map, control_type=control_type, model=controlnet, scale=float(scale),
                                                         start=float(start), end=float(end), preprocessed=True,
                                                         prompt_more_important=prompt_more_important),)
    spec = GenerationSpec(prompt, seed=int(seed), steps=steps, guidance=guidance, control=control, guess_mode=guess_mode,
                          init_image=init_image, strength=strength)
    return generate(pipe, spec).arrays()[0]


def _check_cases(cases: dict) -> int:
    n = len(cases["table"])
    for key in ("maps", "masks"):
        if key in cases and len(cases[key]) != n:
            raise invalid(f"cases[{key!r}]", f"{len(cases[key])} items", f"one per row of cases['table'] ({n})")
    return n


def fidelity(
    pipe, controlnet, cases: dict, region: Region, scales: Iterable[float] = (1.0,), windows: Iterable[tuple[float, float]] = ((0.0, 1.0),),
    guidance: float | None = None, steps: int | None = None, control_type: str = "edges", callback: Callback | None = None,
    guess_mode: bool = False,
) -> pd.DataFrame:
    """IoU of each case's truth mask and the generated subject, per scale and window (tidy: one row per image).

    ``controlnet=None`` measures the model without control on the same prompts and seeds (``scale`` NaN).
    ``guess_mode`` is A1111's "ControlNet is more important": the ControlNet acts on the conditional half only.
    """
    n = _check_cases(cases)
    scales = [float("nan")] if controlnet is None else [float(s) for s in scales]
    windows = [(0.0, 1.0)] if controlnet is None else [tuple(map(float, w)) for w in windows]
    total, rows = n * len(scales) * len(windows), []
    for s in scales:
        for start, end in windows:
            for i, case in enumerate(cases["table"].itertuples()):
                image = generate_one(pipe, case.prompt, case.seed, controlnet, cases["maps"][i], s, start, end, guidance, steps, control_type,
                                     guess_mode=guess_mode and controlnet is not None)
                found = region(image)
                rows.append({"case": i, "prompt": case.prompt, "seed": int(case.seed), "control": controlnet is not None, "scale": s,
                             "start": start, "end": end, "guidance": guidance, "guess_mode": guess_mode and controlnet is not None,
                             "iou": iou(found, cases["masks"][i]),
                             "truth_area": int(np.asarray(cases["masks"][i]).sum()), "found_area": int(found.sum())})
                if callback is not None:
                    callback(len(rows), total)
    return pd.DataFrame(rows)


def summarize(table: pd.DataFrame, by: Sequence[str] = ("scale",), threshold: float = 0.85) -> pd.DataFrame:
    """Mean, standard deviation and share at or above ``threshold`` of the IoU per group, with the count."""
    grouped = table.groupby(list(by), dropna=False)["iou"]
    return pd.DataFrame({"mean_iou": grouped.mean(), "std_iou": grouped.std(), f"share_iou_ge_{threshold:g}": grouped.apply(lambda x: (x >= threshold).mean()),
                         "n": grouped.size()}).reset_index()


def zero_convolution(pipe, untrained, trained, prompt: str, seed: int, control_map, steps: int | None = None) -> pd.DataFrame:
    """Pixels changed against no ControlNet: an untrained ControlNet at scale 1, a trained one at 0 and at 1.

    The first two must change nothing (the zero convolutions output exactly 0, and scale 0 multiplies
    every residual by 0); the third shows that the trained one does act. One row per comparison.
    """
    base = generate_one(pipe, prompt, seed, steps=steps).astype(np.int16)
    rows = []
    for name, model, scale in (("untrained ControlNet, scale 1", untrained, 1.0), ("trained ControlNet, scale 0", trained, 0.0),
                               ("trained ControlNet, scale 1", trained, 1.0)):
        image = generate_one(pipe, prompt, seed, model, control_map, scale, steps=steps).astype(np.int16)
        diff = np.abs(image - base)
        rows.append({"comparison": name, "max_abs_pixel_difference": int(diff.max()), "pixels_changed": int((diff.max(axis=2) > 0).sum()),
                     "pixels": int(diff.shape[0] * diff.shape[1])})
    return pd.DataFrame(rows)


def over_training(pipe, checkpoints: Sequence[tuple[int, object]], cases: dict, region: Region, scale: float = 1.0,
                  steps: int | None = None, callback: Callback | None = None) -> pd.DataFrame:
    """Fidelity at ``scale`` of each (training step, ControlNet) pair: one row per step and case."""
    tables = []
    for k, (step, model) in enumerate(checkpoints):
        table = fidelity(pipe, model, cases, region, scales=(scale,), steps=steps)
        tables.append(table.assign(step=int(step)))
        if callback is not None:
            callback(k + 1, len(checkpoints))
    return pd.concat(tables, ignore_index=True)


def conflicts(
    pipe, controlnet, table: pd.DataFrame, maps: np.ndarray, judge: Judge, scales: Iterable[float] = (0.0, 0.5, 1.0, 1.5, 2.0),
    guidances: Iterable[float] = (2.0, 5.0, 10.0), steps: int | None = None, callback: Callback | None = None,
    modes: Iterable[str] = (BALANCED,),
) -> pd.DataFrame:
    """Prompt against control: per case, scale, guidance and A1111 Control Mode, what the image shows and who won.

    ``table`` rows need ``prompt``, ``seed``, ``kind`` (the attribute in conflict, a key of ``judge``'s
    answer), ``prompt_says`` and ``control_says``; ``maps`` holds the control map of each row.
    ``winner`` is ``prompt``, ``control`` or ``neither``.
    """
    if len(maps) != len(table):
        raise invalid("maps", f"{len(maps)} maps", f"one per row of the table ({len(table)})")
    modes = list(modes)
    validate_params({"modes": modes}, {"modes": [Check(lambda m: set(m) <= set(CONTROL_MODES) and len(m) > 0, ", ".join(CONTROL_MODES))]})
    scales, guidances = [float(s) for s in scales], [float(g) for g in guidances]
    rows, total = [], len(table) * len(scales) * len(guidances) * len(modes)
    for mode in modes:
        for g in guidances:
            for s in scales:
                for i, case in enumerate(table.itertuples()):
                    image = generate_one(pipe, case.prompt, case.seed, controlnet, maps[i], s, guidance=g, steps=steps,
                                         guess_mode=mode == CONTROL_MORE, prompt_more_important=mode == PROMPT_MORE)
                    found = judge(image).get(case.kind)
                    winner = "control" if found == case.control_says else ("prompt" if found == case.prompt_says else "neither")
                    rows.append({"case": i, "kind": case.kind, "prompt_says": case.prompt_says, "control_says": case.control_says,
                                 "scale": s, "guidance": g, "mode": mode, "found": found, "winner": winner})
                    if callback is not None:
                        callback(len(rows), total)
    return pd.DataFrame(rows)


def conflict_table(table: pd.DataFrame) -> pd.DataFrame:
    """Share of cases the control wins, per attribute in conflict, guidance (and Control Mode, when several; rows)
    and scale (columns)."""
    wins = table.assign(control_wins=table.winner.eq("control"))
    modes = ["mode"] if "mode" in table and table["mode"].nunique() > 1 else []
    return wins.pivot_table(index=["kind", *modes, "guidance"], columns="scale", values="control_wins", aggfunc="mean")


def keep_layout(
    pipe, controlnet, cases: dict, region: Region, judge: Judge, scales: Iterable[float] = (1.0,),
    strengths: Iterable[float] = (0.5, 0.75, 0.9), steps: int | None = None, callback: Callback | None = None,
) -> pd.DataFrame:
    """Keep an input image's layout while the prompt changes: ControlNet on the image's map against img2img.

    ``cases``: ``table`` (``prompt``: the new prompt, ``seed``, ``want_*`` columns with the attributes the new
    prompt asks for, e.g. ``want_colour``), ``images`` (the inputs), ``maps`` (each input's map) and ``masks``
    (each input's subject). Per method, the layout kept (IoU with the input's subject) and whether the image
    shows what the prompt asked for. Methods: txt2img (no input), img2img per strength, ControlNet per scale.
    """
    n, strengths = _check_cases(cases), [float(s) for s in strengths]
    for s in strengths:
        validate_params({"strength": s}, {"strength": [Interval(float, 0, 1)]})
    wanted = [c for c in cases["table"].columns if c.startswith("want_")]
    methods = [("txt2img", {})] + [(f"img2img {s:g}", {"strength": s, "img2img": True}) for s in strengths]
    methods += [(f"ControlNet {s:g}", {"scale": float(s), "control": True}) for s in scales]
    rows, total = [], n * len(methods)
    for name, how in methods:
        for i, case in enumerate(cases["table"].itertuples()):
            image = generate_one(
                pipe, case.prompt, case.seed, controlnet if how.get("control") else None, cases["maps"][i], how.get("scale", 1.0),
                steps=steps, init_image=cases["images"][i] if how.get("img2img") else None, strength=how.get("strength", 0.75),
            )
            shown = judge(image)
            row = {"case": i, "method": name, "layout_iou": iou(region(image), cases["masks"][i])}
            for column in wanted:
                row[column.replace("want_", "") + "_ok"] = shown.get(column.replace("want_", "")) == getattr(case, column)
            rows.append(row)
            if callback is not None:
                callback(len(rows), total)
    return pd.DataFrame(rows)


def plot_curve(table: pd.DataFrame, x: str, y: str = "iou", hue: str | None = None, ax=None, xlabel: str | None = None,
               ylabel: str = "IoU of control region and generated shape", title: str | None = None):
    """Mean of ``y`` against ``x`` (one line per ``hue``), with the standard error as a band; labelled axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    groups = [(None, table)] if hue is None else list(table.groupby(hue))
    for label, part in groups:
        stats = part.groupby(x)[y].agg(["mean", "sem"]).reset_index()
        ax.plot(stats[x], stats["mean"], marker="o", label=None if label is None else f"{hue} {label}")
        ax.fill_between(stats[x], stats["mean"] - stats["sem"].fillna(0), stats["mean"] + stats["sem"].fillna(0), alpha=0.2)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if hue is not None:
        ax.legend(fontsize=8)
    return ax
