"""Two engines, one contract: DuckDB on one machine (out-of-core), Dask across many.

An engine only ever answers small questions -- a row count, counts per group
key, how many rows meet each condition, a deterministic sample of captions --
so no table is ever materialised in pandas. Analyses turn those small answers
into tidy tables in plain Python, identically for both engines.
"""
from __future__ import annotations

import hashlib
import inspect
import threading
from typing import Any

import pandas as pd

from ..errors import Cancelled, DataError, DependencyError
from ..progress import Callback
from ..validation import POSITIVE_INT, Check, Options, invalid, validate_params
from .expr import Expr, col, to_pandas, to_sql
from .sources import Source

ENGINES = ("duckdb", "dask")
SCHEDULER = "'local' or an address like tcp://host:8786"
CONNECT_TIMEOUT_S = 5  # seconds to wait for a Dask scheduler before refusing its address
# Every engine option, checked once at the boundary (open_dataset, Dataset.with_engine).
CONSTRAINTS: dict[str, list] = {
    "engine": [Options(ENGINES)],
    "threads": [None, POSITIVE_INT],
    "memory_limit": [str],
    "temp_directory": [None, str],
    "setup_sql": [None, Check(lambda q: isinstance(q, (list, tuple)) and all(isinstance(x, str) for x in q),
                              "a list of SQL statements")],
    "scheduler": [None, Check(lambda s: s == "local" or ":" in s, SCHEDULER)],
    "blocksize": [str, POSITIVE_INT],
    "storage_options": [None, dict],
}
_BOOL_OPS = {"ge", "lt", "and", "not_null", "matches"}
_FLOAT_OPS = {"num", "least", "ratio"}


def _hash_threshold(fraction: float) -> str:
    """Fixed-width hex string: md5 prefixes below it select ``fraction`` of distinct texts."""
    return f"{min(int(fraction * 16**8), 16**8 - 1):08x}" if fraction < 1 else "~"


def _normalise(frame: pd.DataFrame, keys: dict[str, Expr]) -> pd.DataFrame:
    """Same dtypes and order whichever engine produced the counts."""
    frame = frame.copy()
    for name, e in keys.items():
        if e.op in _BOOL_OPS:
            frame[name] = frame[name].astype(bool)
        elif e.op == "bin":
            frame[name] = pd.to_numeric(frame[name]).astype("Int64")
        elif e.op in _FLOAT_OPS:
            frame[name] = pd.to_numeric(frame[name]).astype("float64")
        else:
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    frame["count"] = frame["count"].astype("int64")
    frame = frame[frame["count"] > 0]
    names = list(keys)
    if names:
        frame = frame.groupby(names, dropna=False, sort=False, as_index=False)["count"].sum()
        frame = frame.sort_values(names, na_position="last", kind="stable")
    return frame.reset_index(drop=True)[[*names, "count"]]


class Engine:
    """What every engine answers. ``columns`` maps canonical names to the source's names."""

    name = "base"

    def __init__(self, source: Source, columns: dict[str, str]) -> None:
        self.source = source
        self.mapping = columns

    def _check(self, exprs: list[Expr]) -> None:
        for e in exprs:
            missing = e.columns() - set(self.mapping)
            if missing:
                raise DataError(f"columns: this dataset has no {', '.join(sorted(missing))}")

    def count(self, callback: Callback | None = None) -> int:
        raise NotImplementedError

    def group_count(self, keys: dict[str, Expr], where: Expr | None = None, callback: Callback | None = None) -> pd.DataFrame:
        """Rows per distinct combination of ``keys`` (nulls kept as a group), sorted by key."""
        raise NotImplementedError

    def count_where(self, conditions: dict[str, Expr], callback: Callback | None = None) -> dict[str, int]:
        """``{"rows": n, name: rows where condition holds, ...}``."""
        raise NotImplementedError

    def sample_text(self, column: str, n: int, seed: int = 0, rows: int | None = None) -> list[str]:
        """Up to ``n`` distinct non-null values of ``column`` chosen by md5(value:seed), the same in every engine."""
        raise NotImplementedError

    def rows_where(self, columns: list[str], where: Expr | None, limit: int) -> pd.DataFrame:
        """Up to ``limit`` rows (canonical ``columns``) meeting ``where``; for looking at examples."""
        raise NotImplementedError

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------


class DuckDBEngine(Engine):
    """DuckDB over parquet/CSV/JSON: streams, spills to disk past ``memory_limit``, uses every core."""

    name = "duckdb"

    def __init__(self, source: Source, columns: dict[str, str], threads: int | None = None,
                 memory_limit: str = "1GB", temp_directory: str | None = None,
                 setup_sql: list[str] | None = None) -> None:
        """``setup_sql`` runs first: e.g. ``["CREATE SECRET (TYPE s3, PROVIDER credential_chain)"]``
        for private s3:// data, or ``["CREATE SECRET (TYPE huggingface, PROVIDER credential_chain)"]``
        for gated hf:// datasets (DuckDB loads httpfs by itself, given internet)."""
        import duckdb

        super().__init__(source, columns)
        config = {"memory_limit": memory_limit}
        if threads:
            config["threads"] = int(threads)
        if temp_directory:
            config["temp_directory"] = temp_directory
        self.con = duckdb.connect(config=config)
        # progress is tracked (query_progress) but never printed
        self.con.execute("SET enable_progress_bar = true; SET enable_progress_bar_print = false")
        for statement in setup_sql or []:
            try:
                self.con.execute(statement)
            except duckdb.Error as exc:  # a typo, a secret DuckDB cannot create: the statement and DuckDB's first line
                raise invalid("setup_sql", statement, f"a statement DuckDB runs ({str(exc).splitlines()[0]})") from None
        self._lock = threading.Lock()
        scan = self._scan()
        select = ", ".join(f'"{actual}" AS "{canon}"' for canon, actual in columns.items()) or "1 AS __none"
        self.con.execute(f"CREATE VIEW data AS SELECT {select} FROM {scan}")

    def _scan(self) -> str:
        s = self.source
        if s.frame is not None:
            self.con.register("source_frame", s.frame)
            return "source_frame"
        files = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in s.paths) + "]"
        if s.format == "parquet":
            return f"read_parquet({files}, union_by_name=true)"
        if s.format in ("csv", "tsv"):
            delim = "\\t" if s.format == "tsv" else ","
            return f"read_csv({files}, delim=E'{delim}', header=true, union_by_name=true, quote='\"', escape='\"')"
        return f"read_json({files}, format='newline_delimited', union_by_name=true)"

    def describe_columns(self) -> list[str]:
        return [r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {self._scan()}").fetchall()]

    def _query(self, sql: str, callback: Callback | None) -> pd.DataFrame:
        """Run ``sql``; while it runs, report DuckDB's progress and honour Cancelled by interrupting."""
        if callback is None:
            with self._lock:
                return self.con.execute(sql).df()
        box: dict[str, object] = {}

        def work() -> None:
            try:
                box["df"] = self.con.execute(sql).df()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box["error"] = exc

        with self._lock:
            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            try:
                callback(0, 1000)
                while thread.is_alive():
                    thread.join(0.2)
                    done = self.con.query_progress()
                    if thread.is_alive() and done is not None and done >= 0:
                        callback(int(done * 10), 1000)
            except Cancelled:
                self.con.interrupt()
                thread.join()
                raise
            if "error" in box:
                raise box["error"]  # type: ignore[misc]
            callback(1000, 1000)
            return box["df"]  # type: ignore[return-value]

    def count(self, callback: Callback | None = None) -> int:
        return int(self._query("SELECT count(*) AS n FROM data", callback)["n"].iloc[0])

    def group_count(self, keys, where=None, callback=None):
        self._check([*keys.values(), *([where] if where is not None else [])])
        cols = ", ".join(f'{to_sql(e)} AS "{name}"' for name, e in keys.items())
        cond = f" WHERE {to_sql(where)}" if where is not None else ""
        if keys:
            sql = f"SELECT {cols}, count(*) AS count FROM data{cond} GROUP BY ALL"
        else:
            sql = f"SELECT count(*) AS count FROM data{cond}"
        return _normalise(self._query(sql, callback), keys)

    def count_where(self, conditions, callback=None):
        self._check(list(conditions.values()))
        sums = "".join(f', sum(CASE WHEN {to_sql(e)} THEN 1 ELSE 0 END) AS "{k}"' for k, e in conditions.items())
        row = self._query(f"SELECT count(*) AS rows{sums} FROM data", callback).iloc[0]
        return {"rows": int(row["rows"]), **{k: int(0 if pd.isna(row[k]) else row[k]) for k in conditions}}

    def sample_text(self, column, n, seed=0, rows=None):
        self._check([col(column)])
        rows = self.count() if rows is None else rows
        thr = _hash_threshold(4.0 * n / max(rows, 1))
        h = f"""md5(CAST("{column}" AS VARCHAR) || ':{int(seed)}')"""
        sql = (f'SELECT DISTINCT CAST("{column}" AS VARCHAR) AS v, {h} AS h FROM data '
               f'WHERE "{column}" IS NOT NULL AND substr({h}, 1, 8) < \'{thr}\' ORDER BY h, v LIMIT {int(n)}')
        return self._query(sql, None)["v"].tolist()

    def rows_where(self, columns, where, limit):
        self._check([col(c) for c in columns] + ([where] if where is not None else []))
        cond = f" WHERE {to_sql(where)}" if where is not None else ""
        names = ", ".join(f'"{c}"' for c in columns)
        return self._query(f"SELECT {names} FROM data{cond} LIMIT {int(limit)}", None)

    def close(self) -> None:
        self.con.close()


# ---------------------------------------------------------------------------------------------


def _partial_counts(part: pd.DataFrame, keys: dict[str, Expr], where: Expr | None) -> pd.DataFrame:
    frame = pd.DataFrame({name: to_pandas(e, part) for name, e in keys.items()}, index=part.index)
    if where is not None:
        frame = frame[to_pandas(where, part).to_numpy(bool)]
    if not keys:
        return pd.DataFrame({"count": [len(frame)]})
    return frame.groupby(list(keys), dropna=False, sort=False).size().rename("count").reset_index()


def _partial_sums(part: pd.DataFrame, conditions: dict[str, Expr]) -> dict[str, int]:
    return {"rows": len(part), **{k: int(to_pandas(e, part).sum()) for k, e in conditions.items()}}


def _partial_sample(part: pd.DataFrame, column: str, seed: int, thr: str) -> pd.DataFrame:
    values = part[column].dropna().astype(str).unique()
    hashes = [hashlib.md5(f"{v}:{seed}".encode("utf-8")).hexdigest() for v in values]
    frame = pd.DataFrame({"v": values, "h": hashes})
    return frame[frame["h"].str[:8] < thr]


class DaskEngine(Engine):
    """Dask DataFrames, partition by partition, on the threads of this process or on a cluster.

    ``scheduler``: ``None`` for Dask's local threads, ``"local"`` to start a
    ``distributed.LocalCluster``, or a scheduler address such as
    ``"tcp://10.0.0.5:8786"``. ``storage_options`` go to fsspec (s3fs, hf).
    """

    name = "dask"

    def __init__(self, source: Source, columns: dict[str, str], scheduler: str | None = None,
                 blocksize: str = "64MB", storage_options: dict | None = None) -> None:
        try:
            import dask.dataframe  # noqa: F401
        except ImportError as exc:  # pragma: no cover - dask is a dependency
            raise DependencyError("engine='dask' needs dask[dataframe]: pip install 'dask[dataframe]' distributed") from exc
        super().__init__(source, columns)
        self.blocksize = blocksize
        self.storage_options = storage_options
        self.client = None
        self.cluster = None
        if scheduler is not None:
            try:
                from distributed import Client, LocalCluster
            except ImportError as exc:  # pragma: no cover
                raise DependencyError("scheduler needs distributed: pip install distributed") from exc
            if scheduler == "local":
                self.cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
                self.client = Client(self.cluster, set_as_default=False)
            else:  # an address, as check_engine made sure; one that does not answer is a line in seconds, not a minute
                try:
                    self.client = Client(scheduler, set_as_default=False, timeout=CONNECT_TIMEOUT_S)
                except (OSError, TimeoutError) as exc:
                    raise invalid("scheduler", scheduler, f"a Dask scheduler that answers within {CONNECT_TIMEOUT_S} s "
                                                          f"({type(exc).__name__})") from None

    def _frame(self, canonical: list[str]):
        import dask.dataframe as dd

        s = self.source
        actual = [self.mapping[c] for c in canonical] or list(self.mapping.values())[:1]
        kw = {"storage_options": self.storage_options} if self.storage_options else {}
        if s.frame is not None:
            ddf = dd.from_pandas(s.frame[actual], npartitions=max(1, min(16, len(s.frame) // 50_000)))
        elif s.format == "parquet":
            ddf = dd.read_parquet(s.paths, columns=actual, split_row_groups="adaptive", blocksize=self.blocksize, **kw)
        elif s.format in ("csv", "tsv"):
            ddf = dd.read_csv(s.paths, sep="\t" if s.format == "tsv" else ",", usecols=actual, dtype=str,
                              blocksize=None if any(p.endswith(".gz") for p in s.paths) else self.blocksize,
                              keep_default_na=False, na_values=[""], **kw)
        else:
            ddf = dd.read_json(s.paths, lines=True, blocksize=None, **kw)[actual]
        return ddf.rename(columns={self.mapping[c]: c for c in canonical})

    def _map(self, canonical: set[str], fn, callback: Callback | None, enough=None) -> list:
        """Apply ``fn`` to every partition (loaded with only ``canonical`` columns), a chunk at a time.

        Chunks let ``callback`` report progress and cancel; ``enough(results)``
        stops early (examples need only the first few matches).
        """
        import dask

        parts = self._frame(sorted(canonical)).to_delayed()
        tasks = [dask.delayed(fn)(p) for p in parts]
        step = max(1, len(tasks) // 20)
        out: list = []
        if callback:
            callback(0, len(tasks))
        for start in range(0, len(tasks), step):
            chunk = tasks[start:start + step]
            out.extend(self.client.compute(chunk, sync=True) if self.client else dask.compute(*chunk))
            if callback:
                callback(len(out), len(tasks))
            if enough is not None and enough(out):
                break
        return out

    def count(self, callback=None):
        first = next(iter(self.mapping), None)
        if first is None:
            raise DataError("columns: this dataset has none of the known columns")
        return sum(self._map({first}, len, callback))

    def group_count(self, keys, where=None, callback=None):
        exprs = [*keys.values(), *([where] if where is not None else [])]
        self._check(exprs)
        needed = set().union(*(e.columns() for e in exprs)) if exprs else set()
        parts = self._map(needed, lambda p: _partial_counts(p, keys, where), callback)
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*keys, "count"])
        if not keys:
            frame = pd.DataFrame({"count": [int(frame["count"].sum())]})
        return _normalise(frame, keys)

    def count_where(self, conditions, callback=None):
        self._check(list(conditions.values()))
        needed = set().union(*(e.columns() for e in conditions.values())) if conditions else set()
        parts = self._map(needed, lambda p: _partial_sums(p, conditions), callback)
        return {k: int(sum(p[k] for p in parts)) for k in ["rows", *conditions]}

    def sample_text(self, column, n, seed=0, rows=None):
        self._check([col(column)])
        rows = self.count() if rows is None else rows
        thr = _hash_threshold(4.0 * n / max(rows, 1))
        parts = self._map({column}, lambda p: _partial_sample(p, column, int(seed), thr), None)
        frame = pd.concat(parts, ignore_index=True).drop_duplicates().sort_values(["h", "v"])
        return frame["v"].head(int(n)).tolist()

    def rows_where(self, columns, where, limit):
        self._check([col(c) for c in columns] + ([where] if where is not None else []))
        needed = set(columns) | (where.columns() if where is not None else set())

        def pick(p: pd.DataFrame) -> pd.DataFrame:
            if where is not None:
                p = p[to_pandas(where, p).to_numpy(bool)]
            return p[columns].head(limit)

        parts = self._map(needed, pick, None, enough=lambda out: sum(len(p) for p in out) >= limit)
        return pd.concat(parts, ignore_index=True).head(limit) if parts else pd.DataFrame(columns=columns)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


_CLASSES: dict[str, type[Engine]] = {"duckdb": DuckDBEngine, "dask": DaskEngine}


def engine_options(name: str) -> tuple[str, ...]:
    """The options engine ``name`` takes (its constructor's keywords after the source and columns)."""
    return tuple(inspect.signature(_CLASSES[name]).parameters)[2:]


def check_engine(name: str, options: dict[str, Any]) -> None:
    """Refuse an unknown engine, an option that engine does not take, or an option value, before any work."""
    validate_params({"engine": name}, CONSTRAINTS)
    takes = engine_options(name)
    for key, value in options.items():
        if key not in takes:
            owners = [e for e in ENGINES if key in engine_options(e)]
            raise invalid(key, value, f"only with engine={owners[0]!r}" if owners
                          else f"an option of engine={name!r}: {', '.join(takes)}")
    validate_params(options, CONSTRAINTS)


def make_engine(name: str, source: Source, columns: dict[str, str], **options: Any) -> Engine:
    """``duckdb`` or ``dask``, with that engine's options (threads/memory_limit, scheduler/storage_options).

    Names and options are checked by :func:`check_engine` at the boundary; this only builds.
    """
    return _CLASSES[name](source, columns, **options)
