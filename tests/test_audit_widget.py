"""AuditPanel driven from Python: open, summary, analysis table and plots, examples, errors in status."""
from __future__ import annotations

import pandas as pd

from sdlab.widgets.audit import AuditPanel


def test_panel_flow(tmp_path):
    path = tmp_path / "m.parquet"
    pd.DataFrame({"URL": ["https://i.pinimg.com/a.jpg", "http://b.example.com/x.jpg"],
                  "TEXT": ["a nurse and her cat", "a red bike"]}).to_parquet(path)
    panel = AuditPanel(str(path))
    panel.open(background=False)
    assert panel.last_error is None and "rows" in panel.summary.value
    panel.analysis.value = "domains"
    panel.run_selected(background=False)
    assert "pinimg.com" in panel.table.value and len(panel.plots.children) >= 2
    panel.analysis.value = "sizes"
    panel.run_selected(background=False)
    assert "not available" in panel.table.value and panel.plots.children == ()
    panel.domain.value = "example.com"
    panel.show_examples(background=False)
    assert "a red bike" in panel.examples.value and "nurse" not in panel.examples.value


def test_panel_errors_go_to_status(tmp_path):
    panel = AuditPanel(str(tmp_path / "nope.parquet"))
    panel.run_selected(background=False)
    assert "press Open" in panel.last_error
    panel.open(background=False)
    assert "does not exist" in panel.last_error
