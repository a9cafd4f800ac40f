"""Atomic file writes: a result is either wholly on disk or not at all.

Every file sdlab writes goes through here, so a killed run never leaves a
half-written PNG, parquet or checkpoint that a resume would trust.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    The temporary file keeps ``path``'s suffix so writers that pick a format
    from the extension (Pillow, pandas) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def unique_path(directory: str | os.PathLike, stem: str, suffix: str) -> Path:
    """Return ``directory/stem-NNNN.suffix`` with the first counter not yet taken.

    Saving never overwrites: callers write to the returned path atomically.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    counter = 0
    while True:
        candidate = directory / f"{stem}-{counter:04d}{suffix}"
        if not candidate.exists():
            return candidate
        counter += 1


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line (a training log: a line is whole or absent, and readers skip a torn last line)."""
    import json

    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
