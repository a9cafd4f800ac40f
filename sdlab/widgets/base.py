"""The one shape every sdlab panel has.

A panel owns a root ``widget`` (what the notebook displays), a one-line
``status`` where errors appear, and for long work a progress bar and a Cancel
button. Long work runs in a thread so the notebook stays responsive; the core
function receives a ``callback(done, total)`` that updates the bar and raises
:class:`~sdlab.errors.Cancelled` once Cancel was pressed, which stops the
loop at its next step.
"""
from __future__ import annotations

import html
import io
import threading
from typing import Any, Callable

import ipywidgets as W

from ..errors import Cancelled, SdlabError
from ..progress import Callback


def png_bytes(image) -> bytes:
    """A PIL image as PNG bytes for a ``W.Image``."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes for a ``W.Image``; the figure is closed (panels redraw from the worker thread)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


class Panel:
    """Base class: subclasses build their controls and put them in ``self.widget``."""

    def __init__(self) -> None:
        self.status = W.HTML(value="")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="", layout=W.Layout(width="300px"))
        self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True)
        self.cancel_button.on_click(lambda _: self.cancel())
        self._cancel = threading.Event()
        self.thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.widget: W.Widget = W.VBox([])

    # -- display -----------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    def progress_row(self) -> W.HBox:
        return W.HBox([self.progress, self.cancel_button])

    # -- messages ------------------------------------------------------------------
    def show_error(self, message: str) -> None:
        self.last_error = message
        self.status.value = f"<span style='color:#b00020'>error: {html.escape(message)}</span>"

    def show_info(self, message: str) -> None:
        self.last_error = None
        self.status.value = html.escape(message)

    # -- long work -----------------------------------------------------------------
    def callback(self, done: int, total: int) -> None:
        """Progress hook handed to core functions; raises Cancelled after Cancel."""
        self.progress.max = max(total, 1)
        self.progress.value = min(done, self.progress.max)
        if self._cancel.is_set():
            raise Cancelled("cancelled by the user")

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def run(
        self,
        work: Callable[[Callback], Any],
        on_done: Callable[[Any], None] | None = None,
        background: bool = True,
    ) -> None:
        """Run ``work(callback)``; hand its result to ``on_done``; errors go to ``status``.

        ``background=False`` runs in the caller's thread (tests and scripts).
        """
        if self.busy:
            self.show_error("still working: press Cancel or wait")
            return
        self._cancel.clear()
        self.cancel_button.disabled = False
        self.progress.value = 0
        self.show_info("working…")

        def target() -> None:
            try:
                result = work(self.callback)
            except Cancelled:
                self.show_info("cancelled")
            except SdlabError as exc:
                self.show_error(str(exc))
            except Exception as exc:  # a bug, but the notebook must not freeze or lose the panel
                self.show_error(f"{type(exc).__name__}: {exc}")
            else:
                self.show_info("done")
                if on_done is not None:
                    try:
                        on_done(result)
                    except SdlabError as exc:
                        self.show_error(str(exc))
            finally:
                self.cancel_button.disabled = True

        if background:
            self.thread = threading.Thread(target=target, daemon=True)
            self.thread.start()
        else:
            target()

    def wait(self, timeout: float | None = None) -> None:
        """Block until background work finishes (for tests)."""
        if self.thread is not None:
            self.thread.join(timeout)
