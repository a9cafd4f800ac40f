"""Axes and cells: spec fields and their values (A1111's range syntax), and every combination of them.

Parsing imports neither torch nor pandas, so a bad axis is refused at once.
"""
from __future__ import annotations

import csv
import itertools
import math
import re
from dataclasses import dataclass

from ..errors import ValidationError
from ..spec import GenerationSpec
from ..validation import invalid

# Axis names users type -> spec fields. "prompt" is A1111's search/replace (S/R).
FIELDS = {
    "seed": "seed", "cfg": "guidance", "guidance": "guidance", "steps": "steps", "sampler": "sampler",
    "strength": "strength", "size": "size", "prompt": "prompt", "sr": "prompt", "negative": "negative_prompt",
    "negative_prompt": "negative_prompt", "model": "model",
}
NUMERIC = {"seed": int, "guidance": float, "steps": int, "strength": float}
MAX_VALUES = 10_000  # per axis: a grid larger than this is a typo (1-1000000000), refused before a list is built
_RANGE = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*-\s*([+-]?\d+(?:\.\d+)?)\s*(?:\(\s*([+-]\s*\d+(?:\.\d+)?)\s*\)|\[\s*(\d+)\s*\])?\s*$")


def _linspace(start: float, end: float, n: int) -> list[float]:
    """``numpy.linspace(start, end, n)`` value for value (step times index plus start, the last exactly ``end``)."""
    if n == 1:
        return [start]
    step = (end - start) / (n - 1)
    return [i * step + start for i in range(n - 1)] + [end]


def _check_count(field: str, item: str, count: int) -> None:
    if count > MAX_VALUES:
        raise invalid(f"axis {field}", item, f"at most {MAX_VALUES} values per axis (this asks for {count})")


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
                    _check_count(field, item, len(values) + n)
                    values += _linspace(start, end, n)
                else:
                    step = float(m.group(3).replace(" ", "")) if m.group(3) else (1.0 if end >= start else -1.0)
                    if step == 0 or (end - start) * step < 0:
                        raise ValidationError(f"axis {field}: step {step:g} never gets from {start:g} to {end:g}")
                    count = math.floor((end - start) / step + 1e-9) + 1
                    _check_count(field, item, len(values) + count)
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

    @property
    def column(self) -> str:
        """The table's column for this axis's values (and ``<column>_index``): the field's name, except ``sr`` for the
        prompt's search/replace, whose values are the replacements (the ``prompt`` column holds each cell's whole prompt,
        ``prompt_index`` the place in a ``prompts`` list)."""
        return "sr" if self.name == "prompt" else self.name

    def apply(self, spec: GenerationSpec, value) -> GenerationSpec:
        if self.name == "prompt":
            search = self.values[0]
            if search not in spec.prompt:
                raise ValidationError(f"axis prompt (S/R): {search!r} does not occur in the prompt {spec.prompt!r}")
            return spec.replace(prompt=spec.prompt.replace(search, value))
        if self.name == "size":
            from ..spec import parse_size

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
                coords[axis.column] = value
                coords[f"{axis.column}_index"] = index
            key = "p{}-".format(p_index) + "-".join(f"{i}" for i, _ in combo)
            cells.append(Cell(key, coords, spec))
    return cells
