"""AuditPanel: pick a dataset, read its summary, run an analysis, see table and plot side by side.

Thin over :mod:`sdlab.audit`: every button calls one core function in the
background and shows its result; errors land in the status line.
"""
from __future__ import annotations

import html

import ipywidgets as W

from ..audit import ANALYSES, open_dataset, run_analysis
from ..errors import DataError
from .base import Panel
from .base import figure_png


def _html_table(frame, rows: int = 25) -> str:
    return frame.head(rows).to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0)


class AuditPanel(Panel):
    """Dataset path → summary; analysis → table | plot; domain/term filter → example captions."""

    def __init__(self, path: str = "", engine: str = "duckdb") -> None:
        super().__init__()
        self.engine = engine
        self.dataset = None
        self.result = None
        self.path = W.Text(value=str(path), description="dataset", placeholder="file, directory, glob or s3://…/*.parquet",
                           layout=W.Layout(width="520px"))
        self.open_button = W.Button(description="Open", icon="folder-open")
        self.summary = W.HTML()
        self.analysis = W.Dropdown(options=["summary", *ANALYSES], value="domains", description="analysis")
        self.run_button = W.Button(description="Run", icon="play")
        self.table = W.HTML(layout=W.Layout(width="50%", overflow="auto", max_height="480px"))
        self.plots = W.VBox(layout=W.Layout(width="50%"))
        self.domain = W.Text(description="domain", placeholder="pinimg.com")
        self.term = W.Text(description="term", placeholder="nurse")
        self.examples_button = W.Button(description="Examples", icon="search")
        self.examples = W.HTML()
        self.open_button.on_click(lambda _: self.open())
        self.run_button.on_click(lambda _: self.run_selected())
        self.examples_button.on_click(lambda _: self.show_examples())
        self.widget = W.VBox([
            W.HBox([self.path, self.open_button]), self.summary,
            W.HBox([self.analysis, self.run_button]), self.progress_row(), self.status,
            W.HBox([self.table, self.plots]),
            W.HBox([self.domain, self.term, self.examples_button]), self.examples,
        ])

    def open(self, background: bool = True) -> None:
        """Open the dataset at ``path`` and show its summary."""
        path = self.path.value.strip()
        if not path:
            self.show_error("dataset: give a parquet/CSV/JSONL path, directory or glob")
            return
        self.run(lambda cb: open_dataset(path, engine=self.engine), self._opened, background)

    def _opened(self, ds) -> None:
        self.dataset = ds
        s = ds.summary()
        facts = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in s.stats.items())
        self.summary.value = f"<ul>{facts}</ul>{_html_table(s.table)}"

    def _need_dataset(self):
        if self.dataset is None:
            raise DataError("dataset: press Open first")
        return self.dataset

    def run_selected(self, background: bool = True) -> None:
        """Run the chosen analysis; table on the left, plots on the right."""
        name = self.analysis.value
        self.run(lambda cb: run_analysis(self._need_dataset(), name, callback=cb), self._show, background)

    def _show(self, result) -> None:
        self.result = result
        if not result.available:
            self.table.value = "<br>".join(html.escape(n) for n in result.notes)
            self.plots.children = ()
            return
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
        facts = "".join(f"<li><b>{html.escape(k)}</b>: {v:.4g}</li>" if isinstance(v, float)
                        else f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in result.stats.items())
        self.table.value = f"<ul>{facts}{notes}</ul>{_html_table(result.table)}"
        self.plots.children = tuple(W.Image(value=figure_png(fig), format="png") for fig in result.figures().values())

    def show_examples(self, background: bool = True, n: int = 10) -> None:
        """Example rows from the domain and/or with the term typed in the filter boxes."""
        domain, term = self.domain.value.strip() or None, self.term.value.strip() or None
        self.run(lambda cb: self._need_dataset().examples(domain=domain, term=term, n=n), self._show_examples, background)

    def _show_examples(self, rows) -> None:
        self.examples.value = _html_table(rows) if len(rows) else "no matching rows"
