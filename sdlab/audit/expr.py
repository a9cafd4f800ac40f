"""A tiny expression language that compiles to DuckDB SQL and to pandas.

Every analysis states the per-row work it needs (a URL's authority, a score's
histogram bin, "caption mentions nurse") once, as an :class:`Expr`; each
engine compiles it its own way. Keeping the two compilers side by side, with
the same null and NaN rules, is what makes DuckDB and Dask agree exactly.

Rules both compilers follow: numbers are doubles with NaN read as null;
comparisons and regex matches are never null (null -> False); bins and
ratios of a null are null.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..validation import invalid

# scheme and authority of a URL, whatever follows it: "https://user@www.x.com:80" of ".../a.jpg?b".
# The host itself is parsed in Python once per distinct value (see domains.py).
# Written so RE2 can run it one-pass (fast): no ambiguity about where "//" belongs.
AUTHORITY_REGEX = r"^[^/?#]*(?://[^/?#]*)?"
OPS_VALID = "one of col, num, authority, least, ratio, bin, ge, lt, and, not_null, matches, lower"


@dataclass(frozen=True)
class Expr:
    """One operation ``op`` on ``args`` (columns, constants or other expressions); build with the functions below."""

    op: str
    args: tuple

    def columns(self) -> set[str]:
        """Canonical column names this expression reads."""
        if self.op == "col":
            return {self.args[0]}
        out: set[str] = set()
        for a in self.args:
            if isinstance(a, Expr):
                out |= a.columns()
        return out


def col(name: str) -> Expr:
    return Expr("col", (name,))


def num(e: Expr) -> Expr:
    """``e`` as a double; unparseable text and NaN become null."""
    return Expr("num", (e,))


def authority(e: Expr) -> Expr:
    """The scheme+authority prefix of a URL (cheap to group by; parsed later per distinct value)."""
    return Expr("authority", (e,))


def least(a: Expr, b: Expr) -> Expr:
    return Expr("least", (a, b))


def ratio(a: Expr, b: Expr) -> Expr:
    """``a / b``, null when ``b`` is not positive."""
    return Expr("ratio", (a, b))


def bin_(e: Expr, lo: float, width: float, n: int) -> Expr:
    """Histogram bin index of ``e``: ``floor((e - lo) / width)`` clipped to ``0..n-1``."""
    return Expr("bin", (e, float(lo), float(width), int(n)))


def ge(e: Expr, v: float) -> Expr:
    return Expr("ge", (e, float(v)))


def lt(e: Expr, v: float) -> Expr:
    return Expr("lt", (e, float(v)))


def and_(*es: Expr) -> Expr:
    return Expr("and", tuple(es))


def not_null(e: Expr) -> Expr:
    return Expr("not_null", (e,))


def matches(e: Expr, regex: str) -> Expr:
    """Case-insensitive regex search (RE2/Python-compatible patterns only)."""
    return Expr("matches", (e, regex))


def lower(e: Expr) -> Expr:
    return Expr("lower", (e,))


# ---------------------------------------------------------------------------------------------
# DuckDB


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def to_sql(e: Expr) -> str:
    """Compile to a DuckDB SQL expression over the canonical view."""
    op, a = e.op, e.args
    if op == "col":
        return '"' + a[0].replace('"', '""') + '"'
    if op == "num":
        x = f"TRY_CAST({to_sql(a[0])} AS DOUBLE)"
        return f"(CASE WHEN isnan({x}) THEN NULL ELSE {x} END)"
    if op == "authority":
        return f"regexp_extract(CAST({to_sql(a[0])} AS VARCHAR), {_sql_str(AUTHORITY_REGEX)})"
    if op == "least":
        x, y = to_sql(a[0]), to_sql(a[1])
        return f"(CASE WHEN {x} IS NULL OR {y} IS NULL THEN NULL ELSE least({x}, {y}) END)"
    if op == "ratio":
        x, y = to_sql(a[0]), to_sql(a[1])
        return f"(CASE WHEN {y} > 0 THEN {x} / {y} ELSE NULL END)"
    if op == "bin":
        x, lo, w, n = to_sql(a[0]), a[1], a[2], a[3]
        # least/greatest skip nulls in DuckDB, so a null must be kept null explicitly
        return f"(CASE WHEN {x} IS NULL THEN NULL ELSE CAST(least(greatest(floor(({x} - {lo!r}) / {w!r}), 0), {n - 1}) AS BIGINT) END)"
    if op == "ge":
        return f"coalesce({to_sql(a[0])} >= {a[1]!r}, false)"
    if op == "lt":
        return f"coalesce({to_sql(a[0])} < {a[1]!r}, false)"
    if op == "and":
        return "(" + " AND ".join(to_sql(x) for x in a) + ")"
    if op == "not_null":
        return f"({to_sql(a[0])} IS NOT NULL)"
    if op == "matches":
        return f"coalesce(regexp_matches(CAST({to_sql(a[0])} AS VARCHAR), {_sql_str(a[1])}, 'i'), false)"
    if op == "lower":
        return f"lower(CAST({to_sql(a[0])} AS VARCHAR))"
    raise invalid("op", op, OPS_VALID)


# ---------------------------------------------------------------------------------------------
# pandas (used per partition by the Dask engine). Text work goes through pyarrow.compute, which
# uses RE2 like DuckDB: the same regex dialect, the same case folding, and C++ speed.


def _arrow_text(s: pd.Series):
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        a = pa.array(s, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        a = pa.array(s.astype("string"), from_pandas=True)
    if not (pa.types.is_string(a.type) or pa.types.is_large_string(a.type)):
        a = pc.cast(a, pa.string())
    return a


def _from_arrow(a, index: pd.Index) -> pd.Series:
    return a.to_pandas().set_axis(index)


def to_pandas(e: Expr, df: pd.DataFrame) -> pd.Series:
    """Evaluate on a pandas frame with canonical column names."""
    op, a = e.op, e.args
    if op == "col":
        return df[a[0]]
    if op == "num":
        s = to_pandas(a[0], df)
        return pd.to_numeric(s, errors="coerce").astype("float64")
    if op == "authority":
        import pyarrow.compute as pc

        text = _arrow_text(to_pandas(a[0], df))
        return _from_arrow(pc.struct_field(pc.extract_regex(text, f"(?P<k>{AUTHORITY_REGEX})"), [0]), df.index)
    if op == "least":
        x, y = to_pandas(a[0], df), to_pandas(a[1], df)
        return pd.concat([x, y], axis=1).min(axis=1, skipna=False)
    if op == "ratio":
        x, y = to_pandas(a[0], df), to_pandas(a[1], df)
        return (x / y).where(y > 0)
    if op == "bin":
        x, lo, w, n = to_pandas(a[0], df), a[1], a[2], a[3]
        b = np.floor((x - lo) / w).clip(0, n - 1)
        return b.astype("Int64")
    if op == "ge":
        return (to_pandas(a[0], df) >= a[1]).fillna(False).astype(bool)
    if op == "lt":
        return (to_pandas(a[0], df) < a[1]).fillna(False).astype(bool)
    if op == "and":
        out = pd.Series(True, index=df.index)
        for x in a:
            out &= to_pandas(x, df)
        return out
    if op == "not_null":
        return to_pandas(a[0], df).notna()
    if op == "matches":
        import pyarrow.compute as pc

        hit = pc.match_substring_regex(_arrow_text(to_pandas(a[0], df)), a[1], ignore_case=True).fill_null(False)
        return pd.Series(hit.to_numpy(zero_copy_only=False), index=df.index, dtype=bool)
    if op == "lower":
        import pyarrow.compute as pc

        return _from_arrow(pc.utf8_lower(_arrow_text(to_pandas(a[0], df))), df.index)
    raise invalid("op", op, OPS_VALID)
