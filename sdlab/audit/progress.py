"""One progress hook from two options: a caller's ``callback(done, total)`` and a tqdm bar."""
from __future__ import annotations

from typing import Callable

Callback = Callable[[int, int], None]


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
