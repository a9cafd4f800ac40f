"""Where a dataset's rows live: one file, a directory of shards, a glob, remote parquet, or a DataFrame.

Resolving this once, up front, lets both engines read exactly the same files
and lets a typo fail with a one-line message before any work starts.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import DataError

# suffix -> format; compressed text (".csv.gz", ".jsonl.zst") is recognised by the suffix before.
FORMATS = {
    ".parquet": "parquet", ".pq": "parquet",
    ".csv": "csv", ".tsv": "tsv",
    ".jsonl": "json", ".ndjson": "json", ".json": "json",
}
COMPRESSION = (".gz", ".zst", ".bz2", ".xz")
REMOTE_PREFIXES = ("s3://", "gs://", "gcs://", "az://", "abfs://", "hf://", "http://", "https://")


def format_of(path: str) -> str | None:
    """``parquet``, ``csv``, ``tsv`` or ``json`` from a file name, or ``None``."""
    name = path.lower()
    for comp in COMPRESSION:
        if name.endswith(comp):
            name = name[: -len(comp)]
    return FORMATS.get(os.path.splitext(name)[1])


@dataclass
class Source:
    """Resolved input: a format and the files (or remote glob) to read, or an in-memory frame."""

    format: str
    paths: list[str] = field(default_factory=list)
    frame: pd.DataFrame | None = None

    @property
    def remote(self) -> bool:
        return any(p.startswith(REMOTE_PREFIXES) for p in self.paths)

    def describe(self) -> str:
        if self.frame is not None:
            return f"in-memory DataFrame ({len(self.frame)} rows)"
        if len(self.paths) == 1:
            return f"{self.format}: {self.paths[0]}"
        return f"{self.format}: {len(self.paths)} files"


def _single_format(paths: list[str], what: str) -> str:
    formats = {format_of(p) for p in paths} - {None}
    if not formats:
        raise DataError(f"path: no parquet, csv, tsv or jsonl files in {what}")
    if len(formats) > 1:
        raise DataError(f"path: {what} mixes formats ({', '.join(sorted(formats))}); point at one kind of file")
    return formats.pop()


def resolve(path_or_glob: "str | os.PathLike | pd.DataFrame") -> Source:
    """Turn a path, directory, glob, remote URL or DataFrame into a :class:`Source`."""
    if isinstance(path_or_glob, pd.DataFrame):
        return Source("frame", [], path_or_glob)
    if not isinstance(path_or_glob, (str, os.PathLike)):
        raise DataError(f"path: expected a path, glob or DataFrame, got {type(path_or_glob).__name__}")
    path = os.fspath(path_or_glob)
    if path.startswith(REMOTE_PREFIXES):
        fmt = format_of(path)
        if fmt is None:
            raise DataError(f"path: cannot tell the format of {path}; end it with a file name or glob such as '*.parquet'")
        return Source(fmt, [path])
    path = os.path.expanduser(path)
    if any(ch in path for ch in "*?["):
        files = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        if not files:
            raise DataError(f"path: the glob {path} matches no files")
        files = [p for p in files if format_of(p)]
        return Source(_single_format(files, path), files)
    p = Path(path)
    if p.is_dir():
        files = sorted(str(f) for f in p.rglob("*") if f.is_file() and format_of(str(f)) and not f.name.startswith((".", "_")))
        fmt = _single_format(files, str(p))
        return Source(fmt, files)
    if p.is_file():
        fmt = format_of(path)
        if fmt is None:
            raise DataError(f"path: {path} is not parquet, csv, tsv or jsonl (by its name)")
        return Source(fmt, [path])
    raise DataError(f"path: {path} does not exist")
