"""The skeleton every long run shares: one ``Callback``, one reporter, one timed checkpointer.

- ``callback(done, total)`` is how a caller (a panel's progress bar, a test)
  follows long work; raising from it (a panel's Cancel raises
  :class:`~sdlab.errors.Cancelled`) stops the run.
- :class:`Reporter` hands each ``(done, total)`` to the callback and to a
  tqdm bar, so a loop reports in one call.
- :class:`Checkpointer` saves a resumable state every few minutes, and once
  more when the callback stops the run, so running it again continues at the
  step it reached instead of losing the work.

A training loop reads::

    ckpt = Checkpointer(save, minutes=cfg.checkpoint_minutes)
    for step in range(start, steps):
        ...
        ckpt.step(step + 1, steps, callback)
"""
from __future__ import annotations

import time
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


class Checkpointer:
    """Call ``save(step)`` every ``minutes`` of wall clock, and before a raising callback's exception leaves the loop."""

    def __init__(self, save: Callable[[int], None], minutes: float) -> None:
        self.save = save
        self.seconds = minutes * 60
        self.last = time.monotonic()

    def step(self, done: int, total: int, callback: Callback | None = None) -> None:
        """Mark step ``done`` of ``total`` finished: save if the interval has passed, then report."""
        if time.monotonic() - self.last > self.seconds:
            self.save(done)
            self.last = time.monotonic()
        report(callback, done, total, self.save)


class Reporter:
    """Call ``callback`` and advance a tqdm bar (when ``progress``) with each ``(done, total)``.

    Use as a context manager so the bar is closed even when the callback
    raises :class:`~sdlab.errors.Cancelled`.
    """

    def __init__(self, callback: Callback | None = None, progress: bool = False, desc: str = "") -> None:
        self.callback = callback
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=1, desc=desc, unit="step")

    def __call__(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.total = max(total, 1)
            self.bar.n = min(done, self.bar.total)
            self.bar.refresh()
        if self.callback is not None:
            self.callback(done, total)

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def read_checkpoint(path, **options):
    """A resumable checkpoint (``torch.load``, weights only), or one StoreError line naming the file when it is
    truncated or damaged (a disk filled up, a copy cut short): delete it and that stage starts again."""
    import torch

    from .errors import StoreError

    try:
        return torch.load(path, weights_only=True, **options)
    except Exception as exc:  # pickle's, zipfile's and torch's own errors on a damaged file
        raise StoreError(f"checkpoint: {str(path)!r} is unreadable ({str(exc).splitlines()[0][:120]}); "
                         "delete it to start that stage again") from None
