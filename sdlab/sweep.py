"""Sweeps: vary spec fields along up to three axes, measure every image, resume after a kill.

An :class:`Axis` is a spec field and its values (lists, or A1111's range
syntax: ``1-5``, ``1-5 (+2)``, ``0.5-2 (+0.25)``, ``1-10 [4]``). The axes'
product (times an optional list of prompts) gives the cells; each cell is one
image. Cells that share steps, sampler and size run in one batched call, with
seeds, prompts and guidance varying inside it (``generate_many``). After each
batch its cells are written to the store (PNGs with A1111 metadata and one
parquet row per image) before the next starts, so a killed sweep rerun with
the same arguments finishes only what is missing.
"""
from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .errors import StoreError, ValidationError
from .io import atomic_path, atomic_write_text
from .spec import GenerationSpec

# Axis names users type -> spec fields. "prompt" is A1111's search/replace (S/R).
FIELDS = {
    "seed": "seed", "cfg": "guidance", "guidance": "guidance", "steps": "steps", "sampler": "sampler",
    "strength": "strength", "size": "size", "prompt": "prompt", "sr": "prompt", "negative": "negative_prompt",
    "negative_prompt": "negative_prompt", "model": "model",
}
NUMERIC = {"seed": int, "guidance": float, "steps": int, "strength": float}
_RANGE = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*-\s*([+-]?\d+(?:\.\d+)?)\s*(?:\(\s*([+-]\s*\d+(?:\.\d+)?)\s*\)|\[\s*(\d+)\s*\])?\s*$")


def parse_values(field: str, text: str) -> list:
    """Values of one axis from comma-separated text with A1111 ranges for numeric fields."""
    kind = NUMERIC.get(field)
    items = [t.strip() for t in next(csv.reader([text], skipinitialspace=True), []) if t.strip()]
    if not items:
        raise ValidationError(f"axis {field}: no values in {text!r}")
    if kind is None:
        return items
    values: list = []
    for item in items:
        m = _RANGE.match(item)
        try:
            if m:
                start, end = float(m.group(1)), float(m.group(2))
                if m.group(4):  # [n]: n evenly spaced values
                    n = int(m.group(4))
                    if n < 1:
                        raise ValidationError(f"axis {field}: [{n}] must ask for at least 1 value")
                    values += list(np.linspace(start, end, n))
                else:
                    step = float(m.group(3).replace(" ", "")) if m.group(3) else (1.0 if end >= start else -1.0)
                    if step == 0 or (end - start) * step < 0:
                        raise ValidationError(f"axis {field}: step {step:g} never gets from {start:g} to {end:g}")
                    count = int(np.floor((end - start) / step + 1e-9)) + 1
                    values += [start + i * step for i in range(count)]
            else:
                values.append(float(item))
        except ValidationError:
            raise
        except ValueError:
            raise ValidationError(f"axis {field}: {item!r} is not a number or a range like 1-5, 1-5 (+2), 0.5-2 (+0.25), 1-10 [4]") from None
    if kind is int:
        if any(abs(v - round(v)) > 1e-9 for v in values):
            raise ValidationError(f"axis {field}: values must be whole numbers, got {values}")
        return [int(round(v)) for v in values]
    return [round(float(v), 6) for v in values]


@dataclass(frozen=True)
class Axis:
    """A spec field and its values. ``prompt`` is search/replace: the first value is searched for."""

    name: str
    values: tuple

    @classmethod
    def parse(cls, text: str) -> "Axis":
        """``name=values``, e.g. ``seed=1-8``, ``cfg=1,3,7.5``, ``sampler=Euler a,DPM++ 2M``."""
        if "=" not in text:
            raise ValidationError(f"axis {text!r} must be NAME=VALUES, e.g. seed=1-8; names: {', '.join(sorted(FIELDS))}")
        name, values = text.split("=", 1)
        key = name.strip().lower()
        if key not in FIELDS:
            raise ValidationError(f"axis {name.strip()!r} is not known; valid: {', '.join(sorted(FIELDS))}")
        field = FIELDS[key]
        return cls(field, tuple(parse_values(field, values)))

    def apply(self, spec: GenerationSpec, value) -> GenerationSpec:
        if self.name == "prompt":
            search = self.values[0]
            if search not in spec.prompt:
                raise ValidationError(f"axis prompt (S/R): {search!r} does not occur in the prompt {spec.prompt!r}")
            return spec.replace(prompt=spec.prompt.replace(search, value))
        if self.name == "size":
            from .spec import parse_size

            width, height = parse_size(value)
            return spec.replace(width=width, height=height)
        return spec.replace(**{self.name: value})


@dataclass(frozen=True)
class Cell:
    """One image of the sweep: its coordinates and spec."""

    key: str
    coords: dict
    spec: GenerationSpec


def expand(base: GenerationSpec, axes: list[Axis], prompts: list[str] | None = None) -> list[Cell]:
    """Every combination of prompt (if a list is given) and axis values, X fastest."""
    if len(axes) > 3:
        raise ValidationError(f"at most three axes (X, Y, Z), got {len(axes)}")
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise ValidationError(f"axes repeat a field: {names}")
    prompt_list = prompts or [base.prompt]
    cells = []
    for p_index, prompt in enumerate(prompt_list):
        for combo in itertools.product(*[list(enumerate(a.values)) for a in reversed(axes)]):
            combo = list(reversed(combo))
            spec = base.replace(prompt=prompt, batch_size=1)
            coords = {"prompt_index": p_index}
            for axis, (index, value) in zip(axes, combo):
                spec = axis.apply(spec, value)
                coords[axis.name] = value
                coords[f"{axis.name}_index"] = index
            key = "p{}-".format(p_index) + "-".join(f"{i}" for i, _ in combo)
            cells.append(Cell(key, coords, spec))
    return cells


# -- metrics -----------------------------------------------------------------------------
Metric = Callable[[np.ndarray, GenerationSpec], dict]


IMAGE_METRICS = ("saturation", "clipped_share")  # what saturation_metric measures


def saturation_metric(image: np.ndarray, spec: GenerationSpec) -> dict:
    """Mean HSV saturation and the share of clipped pixels: how far guidance pushes colours."""
    from .metrics import clipped_share, saturation

    return {"saturation": saturation(image), "clipped_share": clipped_share(image)}


def default_metrics() -> dict[str, Metric]:
    """What every sweep measures; a model's own metrics (the shapes world's attribute checker) are passed in."""
    return {"saturation": saturation_metric}


# -- the store ---------------------------------------------------------------------------
class ResultStore:
    """A sweep's directory: ``sweep.json`` (its arguments), ``images/``, ``results.parquet``."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.table_path = self.dir / "results.parquet"

    def rows(self) -> pd.DataFrame:
        return pd.read_parquet(self.table_path) if self.table_path.exists() else pd.DataFrame()

    def open(self, arguments: dict, new: bool = False) -> set[str]:
        """Create or reopen the store for ``arguments``; return the keys of finished cells."""
        meta = self.dir / "sweep.json"
        if meta.exists():
            saved = json.loads(meta.read_text())
            if saved != arguments:
                if not new:
                    changed = sorted(k for k in set(saved) | set(arguments) if saved.get(k) != arguments.get(k))
                    raise StoreError(
                        f"{self.dir} holds a sweep made with other arguments (differs in: {', '.join(changed)}); "
                        "use another --out, or --new to archive it and start again"
                    )
                archive = self.dir / f"archive-{sum(1 for _ in self.dir.glob('archive-*')):03d}"
                archive.mkdir()
                for item in list(self.dir.iterdir()):
                    if not item.name.startswith("archive-"):
                        shutil.move(str(item), archive / item.name)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(meta, json.dumps(arguments, indent=2, sort_keys=True))
        table = self.rows()
        return set(table["cell"]) if "cell" in table else set()

    def append(self, rows: list[dict]) -> None:
        table = pd.concat([self.rows(), pd.DataFrame(rows)], ignore_index=True)
        with atomic_path(self.table_path) as tmp:
            table.to_parquet(tmp, index=False)


def _spec_row(spec: GenerationSpec) -> dict:
    return {
        "prompt": spec.prompt, "negative_prompt": spec.negative_prompt, "seed": spec.seed, "steps": spec.steps,
        "guidance": spec.guidance, "sampler": spec.sampler, "width": spec.width, "height": spec.height,
        "clip_skip": spec.clip_skip, "strength": spec.strength, "model": spec.model, "model_hash": spec.model_hash,
    }


def run_sweep(
    pipe, base: GenerationSpec, axes: list[Axis], out_dir: str | Path, prompts: list[str] | None = None,
    metrics: dict[str, Metric] | None = None, new: bool = False, max_batch: int = 32,
    progress: bool = True, callback: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Run (or finish) a sweep into ``out_dir``; return the store's table, one row per image."""
    from .generate import generate_many, prepare
    from .metadata import save_png
    from .models import model_info

    if base.mode != "txt2img":
        raise ValidationError("sweep: only text-to-image sweeps are supported; the base spec has an init image")
    cells = expand(base, axes, prompts)
    info = model_info(pipe)
    arguments = {
        "base": {k: v for k, v in _spec_row(prepare(pipe, base.replace(seed=max(base.seed, 0)))).items() if k not in ("prompt", "seed")},
        "seed": base.seed, "prompt": base.prompt, "prompts": prompts or [],
        "axes": [{"name": a.name, "values": list(a.values)} for a in axes], "model": info.name,
    }
    store = ResultStore(out_dir)
    done = store.open(arguments, new=new)
    todo = [c for c in cells if c.key not in done]
    metrics = default_metrics() if metrics is None else metrics
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="sweep", disable=not progress)
    # group cells that can share a call, then write each batch before starting the next
    groups: dict[tuple, list[Cell]] = {}
    for cell in todo:
        s = prepare(pipe, cell.spec)
        groups.setdefault((s.steps, s.sampler, s.width, s.height, s.clip_skip), []).append(cell)
    finished = len(cells) - len(todo)
    for group in groups.values():
        for start in range(0, len(group), max_batch):
            batch = group[start : start + max_batch]
            results = generate_many(pipe, [c.spec for c in batch], max_batch=max_batch)
            rows = []
            for cell, (image, spec) in zip(batch, results):
                path = save_png(image, spec, store.dir / "images")
                row = {"cell": cell.key, **cell.coords, **_spec_row(spec), "file": str(path.relative_to(store.dir))}
                pixels = np.asarray(image.convert("RGB"))
                for metric in metrics.values():
                    row.update(metric(pixels, spec))
                rows.append(row)
            store.append(rows)
            finished += len(batch)
            bar.update(len(batch))
            if callback is not None:
                callback(finished, len(cells))
    bar.close()
    return store.rows()


# -- views -------------------------------------------------------------------------------
def grid(table: pd.DataFrame, store_dir: str | Path, x: str, y: str | None = None, z_value: Any = None, z: str | None = None, cell: int = 96, prompt_index: int = 0):
    """A labelled X/Y image grid of a sweep (like A1111's X/Y/Z plot); one Z value at a time."""
    from PIL import Image

    from .grid import labelled_grid

    rows = table[table["prompt_index"] == prompt_index]
    if z is not None:
        rows = rows[rows[z] == z_value]
    xs = sorted(rows[x].unique(), key=lambda v: rows.loc[rows[x] == v, f"{x}_index"].iloc[0])
    ys = sorted(rows[y].unique(), key=lambda v: rows.loc[rows[y] == v, f"{y}_index"].iloc[0]) if y else [None]
    images = []
    for yv in ys:
        line = []
        for xv in xs:
            match = rows[(rows[x] == xv) & ((rows[y] == yv) if y else True)]
            line.append(Image.open(Path(store_dir) / match["file"].iloc[0]).convert("RGB"))
        images.append(line)
    title = f"{z} = {z_value}" if z is not None else ""
    return labelled_grid(images, [f"{v:g}" if isinstance(v, float) else str(v) for v in xs],
                         [f"{v:g}" if isinstance(v, float) else ("" if v is None else str(v)) for v in ys],
                         x_title=x, y_title=y or "", cell=cell, title=title)


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n_boot, len(values)), replace=True).mean(axis=1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, 1 - (1 - level) / 2))


def summarize(table: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    """Mean of ``metric`` per group with a 95% bootstrap interval across the rest (usually seeds)."""
    rows = []
    for key, group in table.groupby(by):
        lo, hi = bootstrap_ci(group[metric].astype(float).to_numpy())
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "metric": metric,
                     "mean": float(group[metric].astype(float).mean()), "ci_low": lo, "ci_high": hi, "n": len(group)})
    return pd.DataFrame(rows)


def diversity(table: pd.DataFrame, store_dir: str | Path, by: list[str]) -> pd.DataFrame:
    """1 - mean pairwise SSIM across the images of each group (usually: all seeds of one setting)."""
    from PIL import Image
    from .metrics import mean_pairwise_ssim

    rows = []
    for key, group in table.groupby(by):
        images = [np.asarray(Image.open(Path(store_dir) / f).convert("RGB")) for f in group["file"]]
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "diversity": 1 - mean_pairwise_ssim(images), "n": len(images)})
    return pd.DataFrame(rows)


def plot_metric(table: pd.DataFrame, metric: str, x: str, hue: str | None = None, ax=None):
    """``metric`` against axis ``x`` (one line per ``hue`` value) with 95% bootstrap bands across seeds."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(5, 3.5))[1]
    for label, group in (table.groupby(hue) if hue else [(None, table)]):
        s = summarize(group, metric, [x]).sort_values(x)
        ax.plot(s[x], s["mean"], marker="o", label=None if label is None else f"{hue}={label}")
        ax.fill_between(s[x], s["ci_low"], s["ci_high"], alpha=0.2)
    ax.set(xlabel=x, ylabel=f"{metric} (mean, 95% CI)")
    if hue:
        ax.legend(fontsize=8)
    return ax
