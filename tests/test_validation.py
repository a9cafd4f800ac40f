"""sdlab.validation: constraints accept what they say and every refusal reads the same."""
import math
from dataclasses import dataclass

import pytest

from sdlab.errors import ValidationError
from sdlab.validation import Check, Interval, Options, describe, validate_fields, validate_params


@pytest.mark.parametrize("constraint,good,bad", [
    (Interval(int, 1, None), [1, 7, 10**20], [0, -1, 1.5, True, "2", math.nan]),
    (Interval(float, 0, 1, closed="left"), [0, 0.5, 0.999], [1, -0.1, math.inf, math.nan, None]),
    (Interval(float, 0, None, closed="neither"), [1e-9, 3], [0, -2]),
    (Options(("a", "b")), ["a", "b"], ["c", ["a"], None]),
    (Check(lambda v: v % 8 == 0, "a multiple of 8"), [8, 64], [7, "x"]),
])
def test_constraints_accept_exactly_what_they_describe(constraint, good, bad):
    assert all(constraint.accepts(v) for v in good)
    assert not any(constraint.accepts(v) for v in bad)


def test_descriptions_and_the_one_message_style():
    assert describe([Interval(int, 1, None), None]) == "a whole number >= 1 or None"
    assert describe([Interval(float, 0, 1, closed="right")]) == "a number in (0, 1]"
    assert describe([Options(("x", "y")), str]) == "one of x, y or text"
    with pytest.raises(ValidationError, match=r"^steps: 0 is not valid; valid: a whole number >= 1$"):
        validate_params({"steps": 0}, {"steps": [Interval(int, 1, None)]})


def test_a_dataclass_checks_its_declared_fields_once():
    @dataclass(frozen=True)
    class Config:
        rank: int = 4
        mode: str = "a"
        _parameter_constraints = {"rank": [Interval(int, 1, None)], "mode": [Options(("a", "b"))]}

        def __post_init__(self):
            validate_fields(self)

    Config(rank=2, mode="b")
    with pytest.raises(ValidationError, match="rank: 0 is not valid"):
        Config(rank=0)
    with pytest.raises(ValidationError, match="mode: 'c' is not valid; valid: one of a, b"):
        Config(mode="c")
