"""``open_dataset``: a lazy handle on LAION-style metadata, whatever its files and column names.

Opening reads only the schema. Every analysis asks the dataset's engine small
questions (counts per key), so a 100M-row dataset never passes through pandas.
"""
from __future__ import annotations

import os
import re
from functools import cached_property
from typing import Any

import pandas as pd

from ..errors import DataError, SdlabError
from ..validation import POSITIVE_INT, validate_params
from .engines import Engine, check_engine, make_engine
from .expr import and_, col, matches
from .hosts import parse_authority
from .results import AuditResult
from .schema import ANALYSES, availability, map_columns
from .sources import Source, resolve
from .terms import term_regex

EXAMPLES = {"n": [POSITIVE_INT], "domain": [None, str], "term": [None, str]}


class Dataset:
    """A resolved source, its canonical columns and an engine that answers questions about it.

    Made by :func:`open_dataset` (or :meth:`with_engine`), which check the
    engine and its options before anything is read.
    """

    def __init__(self, source: Source, source_columns: list[str], mapping: dict[str, str],
                 engine: str = "duckdb", **engine_options: Any) -> None:
        self.source = source
        self.source_columns = source_columns
        self.mapping = mapping
        self.engine_name = engine
        self.engine_options = engine_options
        self._engine: Engine | None = None

    @property
    def columns(self) -> list[str]:
        """Canonical columns found (``URL``, ``TEXT``, ``WIDTH`` …)."""
        return list(self.mapping)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.engine_name, self.source, self.mapping, **self.engine_options)
        return self._engine

    def with_engine(self, engine: str, **engine_options: Any) -> "Dataset":
        """The same data behind another engine (to compare, or to move to a cluster)."""
        check_engine(engine, engine_options)
        return Dataset(self.source, self.source_columns, self.mapping, engine, **engine_options)

    @cached_property
    def rows(self) -> int:
        return self.engine.count()

    def availability(self) -> dict[str, str]:
        """``{analysis: "available" | "not available: needs …"}``."""
        return availability(self.columns)

    def summary(self) -> AuditResult:
        """Rows, columns found and which analyses they allow, as a tidy table."""
        avail = self.availability()
        table = pd.DataFrame({"analysis": list(ANALYSES), "status": [avail[a] for a in ANALYSES]})
        unmapped = [c for c in self.source_columns if c not in self.mapping.values()]
        notes = [f"{c} -> {a}" for c, a in self.mapping.items() if c != a]
        if "LANGUAGE" not in self.mapping and "TEXT" in self.mapping:
            notes.append("languages: no LANGUAGE column; languages are detected from a sample of captions")
        stats = {
            "source": self.source.describe(),
            "rows": self.rows,
            "columns": ", ".join(self.columns),
            "other_columns": ", ".join(unmapped),
            "engine": self.engine_name,
        }
        return AuditResult("summary", table, stats=stats, notes=notes)

    def examples(self, domain: str | None = None, term: str | None = None, n: int = 10) -> pd.DataFrame:
        """Up to ``n`` rows (URL, TEXT) from registrable ``domain`` and/or whose caption has ``term``."""
        validate_params({"n": n, "domain": domain, "term": term}, EXAMPLES)
        wanted = [c for c in ("URL", "TEXT") if c in self.mapping]
        if not wanted:
            raise DataError("examples: this dataset has neither URL nor TEXT")
        conds = []
        if domain:
            if "URL" not in self.mapping:
                raise DataError("domain: this dataset has no URL column")
            conds.append(matches(col("URL"), re.escape(domain.strip().lower())))
        if term:
            if "TEXT" not in self.mapping:
                raise DataError("term: this dataset has no TEXT column")
            conds.append(matches(col("TEXT"), term_regex([term.strip().lower()])))
        where = and_(*conds) if conds else None
        rows = self.engine.rows_where(wanted, where, limit=n * 20 if domain else n)
        if domain:
            target = domain.strip().lower().removeprefix("www.")
            keep = [parse_authority(u).domain == target for u in rows["URL"]]
            rows = rows[keep]
        return rows.head(n).reset_index(drop=True)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __repr__(self) -> str:
        return f"Dataset({self.source.describe()}, columns={self.columns}, engine={self.engine_name!r})"


def _discover(source: Source, engine: str, engine_options: dict) -> list[str]:
    if source.frame is not None:
        return [str(c) for c in source.frame.columns]
    if engine == "dask" and source.remote:
        import dask.dataframe as dd

        opts = engine_options.get("storage_options") or {}
        if source.format == "parquet":
            return list(dd.read_parquet(source.paths, storage_options=opts).columns)
        return list(dd.read_csv(source.paths, sep="\t" if source.format == "tsv" else ",", storage_options=opts).columns)
    from .engines import DuckDBEngine

    probe = None
    try:
        probe = DuckDBEngine(source, {}, setup_sql=engine_options.get("setup_sql"))
        return probe.describe_columns()
    except SdlabError:
        raise
    except Exception as exc:  # duckdb's own errors: a zero-byte, truncated, corrupt or foreign file
        raise DataError(f"path: cannot read {source.describe()}: {str(exc).splitlines()[0]}") from None
    finally:
        if probe is not None:
            probe.close()


def open_dataset(path_or_glob: "str | os.PathLike | pd.DataFrame", columns: list[str] | None = None,
                 engine: str = "duckdb", **engine_options: Any) -> Dataset:
    """Open parquet (file, directory of shards, glob, s3://, hf://), CSV/TSV, JSONL or a DataFrame.

    ``columns`` limits the canonical columns used (``["URL"]`` for a domain
    count). ``engine`` is ``"duckdb"`` (default; options ``threads``,
    ``memory_limit``) or ``"dask"`` (options ``scheduler``, ``storage_options``).
    Only the schema is read here.
    """
    check_engine(engine, engine_options)
    source = resolve(path_or_glob)
    names = _discover(source, engine, engine_options)
    mapping = map_columns(names, columns)
    if not mapping:
        raise DataError(f"path: none of the columns ({', '.join(names[:12])}) is a known LAION column such as URL or TEXT")
    return Dataset(source, names, mapping, engine, **engine_options)
