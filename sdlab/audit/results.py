"""What every analysis returns: tidy tables, headline figures, notes, and a way to save them.

One shape for all analyses means the CLI, the widget and the notebooks show
and save any of them the same way, and "not available" is a result, not an error.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import atomic_path, atomic_write_text
from ..validation import NON_NEGATIVE_INT, validate_params

ROWS = {"rows": [None, NON_NEGATIVE_INT]}


def _plain(v: Any) -> Any:
    """JSON-friendly scalars (numpy ints/floats, NaN -> None)."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


@dataclass
class AuditResult:
    """``table``: the main tidy table; ``tables``: further tidy tables; ``stats``: headline numbers."""

    analysis: str
    table: pd.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    available: bool = True

    @classmethod
    def not_available(cls, analysis: str, reason: str) -> "AuditResult":
        return cls(analysis, pd.DataFrame(), notes=[reason], available=False)

    def figures(self) -> dict[str, Any]:
        """Matplotlib figures for this result, by name (none when not available)."""
        from .plots import figures_for

        return figures_for(self) if self.available else {}

    def head(self, rows: int | None = 20) -> pd.DataFrame:
        """The first ``rows`` rows of the main table (all of it for None)."""
        validate_params({"rows": rows}, ROWS)
        return self.table if rows is None else self.table.head(rows)

    def to_dict(self, rows: int | None = 20) -> dict[str, Any]:
        """A JSON-ready dict: stats, notes and the first ``rows`` rows of the main table."""
        table = self.head(rows)
        return {
            "analysis": self.analysis,
            "available": self.available,
            "stats": {k: _plain(v) for k, v in self.stats.items()},
            "notes": list(self.notes),
            "table": json.loads(table.to_json(orient="records")),
        }

    def save(self, out: str | Path, plots: bool = True) -> list[Path]:
        """Write ``<analysis>.csv``/``.parquet`` per table, ``<analysis>_stats.json`` and a PNG per figure."""
        out = Path(out)
        written: list[Path] = []
        tables = {self.analysis: self.table, **{f"{self.analysis}_{k}": v for k, v in self.tables.items()}}
        for stem, table in tables.items():
            if table.empty and not self.available:
                continue
            for suffix in (".csv", ".parquet"):
                path = out / f"{stem}{suffix}"
                with atomic_path(path) as tmp:
                    if suffix == ".csv":
                        table.to_csv(tmp, index=False)
                    else:
                        table.to_parquet(tmp, index=False)
                written.append(path)
        written.append(atomic_write_text(out / f"{self.analysis}_stats.json",
                                         json.dumps(self.to_dict(rows=0), indent=2, ensure_ascii=False) + "\n"))
        if plots:
            for name, fig in self.figures().items():
                path = out / f"{self.analysis}_{name}.png"
                with atomic_path(path) as tmp:
                    fig.savefig(tmp, dpi=120)
                written.append(path)
        return written
