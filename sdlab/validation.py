"""One way to check parameters: constraints declared once per object, checked by one function.

As in scikit-learn, an object declares ``_parameter_constraints``, a dict from
parameter name to a list of constraints, and calls :func:`validate_params`
once at its boundary (a dataclass's ``__post_init__``, a public function's
first line). A value is valid when any one of its constraints accepts it, and
every refusal reads the same::

    steps: 0 is not valid; valid: a whole number >= 1

Constraints are :class:`Interval`, :class:`Options`, a Python type (``str``,
``bool``, ``dict``), ``None`` (the value may be None) or a :class:`Check`
(any predicate with the words that describe it).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .errors import ValidationError


@dataclass(frozen=True)
class Interval:
    """Numbers of ``kind`` (``int``: whole numbers, ``float``: any real) between ``low`` and ``high``.

    ``closed`` says which ends belong to the interval: "both", "left", "right" or "neither";
    a missing bound (None) is unbounded. NaN and infinities are never valid.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        if not math.isfinite(float(value)):
            return False
        if self.low is not None and (value < self.low or (value == self.low and self.closed in ("right", "neither"))):
            return False
        if self.high is not None and (value > self.high or (value == self.high and self.closed in ("left", "neither"))):
            return False
        return True

    def describe(self) -> str:
        noun = "a whole number" if self.kind is int else "a number"
        fmt = (lambda x: str(int(x))) if self.kind is int else (lambda x: f"{x:g}")
        if self.low is None and self.high is None:
            return noun
        if self.high is None:
            return f"{noun} {'>=' if self.closed in ('both', 'left') else '>'} {fmt(self.low)}"
        if self.low is None:
            return f"{noun} {'<=' if self.closed in ('both', 'right') else '<'} {fmt(self.high)}"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"{noun} in {left}{fmt(self.low)}, {fmt(self.high)}{right}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (compared as given; strings are case-sensitive)."""

    values: tuple

    def __init__(self, values: Iterable) -> None:
        object.__setattr__(self, "values", tuple(values))

    def accepts(self, value: Any) -> bool:
        try:
            return value in self.values
        except TypeError:  # an unhashable value in a set-like container
            return False

    def describe(self) -> str:
        return "one of " + ", ".join(str(v) for v in self.values)


@dataclass(frozen=True)
class Check:
    """Any predicate, with the words that say what it accepts (e.g. ``"a multiple of 8"``)."""

    predicate: Callable[[Any], bool]
    description: str

    def accepts(self, value: Any) -> bool:
        try:
            return bool(self.predicate(value))
        except Exception:  # a predicate that cannot even look at the value rejects it
            return False

    def describe(self) -> str:
        return self.description


_TYPE_WORDS = {str: "text", bool: "true or false", dict: "a mapping", list: "a list", tuple: "a tuple"}


def _accepts(constraint: Any, value: Any) -> bool:
    if constraint is None:
        return value is None
    if isinstance(constraint, type):
        return isinstance(value, constraint) and (constraint is bool or not isinstance(value, bool) or constraint is object)
    return constraint.accepts(value)


def _describe(constraint: Any) -> str:
    if constraint is None:
        return "None"
    if isinstance(constraint, type):
        return _TYPE_WORDS.get(constraint, f"a {constraint.__name__}")
    return constraint.describe()


def describe(constraints: list) -> str:
    """The words for what a list of constraints accepts ("a whole number >= 1 or None")."""
    words = [_describe(c) for c in constraints]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def invalid(name: str, value: Any, valid: str) -> ValidationError:
    """The one message style: ``name: value is not valid; valid: ...``."""
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ValidationError(f"{name}: {shown} is not valid; valid: {valid}")


def validate_params(params: dict[str, Any], constraints: dict[str, list]) -> None:
    """Raise :class:`ValidationError` for the first parameter no constraint of its own accepts."""
    for name, value in params.items():
        allowed = constraints.get(name)
        if allowed is None or allowed == "no_validation":
            continue
        if not any(_accepts(c, value) for c in allowed):
            raise invalid(name, value, describe(allowed))


def validate_fields(obj: Any) -> None:
    """Check a dataclass instance's fields against its class's ``_parameter_constraints``."""
    constraints = type(obj)._parameter_constraints
    validate_params({name: getattr(obj, name) for name in constraints}, constraints)


# Constraints several objects share.
POSITIVE_INT = Interval(int, 1, None)
NON_NEGATIVE_INT = Interval(int, 0, None)
POSITIVE = Interval(float, 0, None, closed="neither")
NON_NEGATIVE = Interval(float, 0, None)
UNIT = Interval(float, 0, 1)
SEED = Interval(int, 0, 2**32 - 1)
