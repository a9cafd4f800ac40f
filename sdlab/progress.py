"""The progress hook long runs share: ``callback(done, total)``, which may stop the run by raising.

A panel's Cancel raises :class:`~sdlab.errors.Cancelled` from the hook; a
resumable run checkpoints the step it reached first, so running it again
continues there instead of losing the work.
"""
from __future__ import annotations

from typing import Callable

Callback = Callable[[int, int], None]


def report(callback: Callback | None, done: int, total: int, checkpoint: Callable[[int], None]) -> None:
    """Hand ``callback`` the progress; when it raises, ``checkpoint(done)`` first, then re-raise."""
    if callback is None:
        return
    try:
        callback(done, total)
    except BaseException:
        checkpoint(done)
        raise
