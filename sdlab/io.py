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


def _nearest_existing(path: Path) -> Path:
    """The path itself or its closest ancestor that exists."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def check_output(name: str, path: str | os.PathLike, kind: str = "dir", suffixes: tuple[str, ...] | None = None,
                 inputs: tuple = (), overwrite: bool = True) -> Path:
    """Refuse an output path before any work, in one line naming the parameter and the path.

    ``kind`` is ``"dir"`` (a directory the command writes into; made if missing) or ``"file"`` (one file;
    its directories are made). Refused: a file where a directory is needed (the path or one of its parents),
    a directory where a file is expected, a place this user cannot write (``/proc``, a read-only mount), a
    file suffix outside ``suffixes``, one of the command's own ``inputs`` (it would be overwritten by its
    own output) and, with ``overwrite=False``, an existing file.
    """
    from .validation import invalid

    path = Path(path).expanduser()
    shown = str(path)
    found = _nearest_existing(path)
    if found == path:
        if kind == "dir" and not path.is_dir():
            raise invalid(name, shown, "a directory to write into; this is a file")
        if kind == "file" and path.is_dir():
            raise invalid(name, shown, "a file name; this is a directory")
        if kind == "file" and not overwrite:
            raise invalid(name, shown, "a file that does not exist yet (this command does not overwrite)")
    elif not found.is_dir():
        raise invalid(name, shown, f"a path whose parents are directories; {str(found)!r} is not a directory")
    where = found if found.is_dir() else found.parent
    try:  # a real probe: os.access says yes to root under /proc and on some network mounts
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError:
        raise invalid(name, shown, f"a place this user can write; {str(where)!r} is not writable") from None
    if kind == "file" and suffixes is not None and path.suffix.lower() not in suffixes:
        raise invalid(name, shown, "a file name ending in " + ", ".join(suffixes))
    for given in inputs:
        if given is not None and os.path.lexists(path) and os.path.lexists(given) and os.path.samefile(path, given):
            raise invalid(name, shown, "a path other than the input it is made from (it would be overwritten)")
    return path


def read_table(name: str, path: str | os.PathLike, **options):
    """A user's CSV file as a DataFrame, or one line naming the parameter and the file (ragged rows, an
    unterminated quote, not UTF-8, empty) instead of pandas' parser exception."""
    import pandas as pd

    from .validation import invalid

    try:
        return pd.read_csv(path, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise invalid(name, str(path), f"a readable CSV file ({str(exc).splitlines()[0][:120]})") from None
