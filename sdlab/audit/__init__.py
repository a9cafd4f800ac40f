"""Training-data and bias audit: where LAION-style data comes from, what filters keep, who it speaks for.

Open any metadata with :func:`open_dataset` (parquet/CSV/JSONL, local or
remote, DuckDB or Dask), then run an analysis; each returns an
:class:`AuditResult` of tidy tables that saves as CSV/parquet + PNG.

    >>> ds = open_dataset("../shared/data/laion_sample/laion_sample_10k.parquet")
    >>> domain_counts(ds).table.head()
"""
from __future__ import annotations

import inspect
from typing import Any

from ..progress import Callback
from ..validation import Options, invalid, validate_params
from .dataset import Dataset, open_dataset
from .results import AuditResult
from .schema import ANALYSES

# analysis name -> the function that runs it (all take the dataset, callback, progress and their own options)
FUNCTIONS = {"domains": "domain_counts", "sizes": "sizes", "scores": "scores", "funnel": "funnel",
             "languages": "languages", "captions": "caption_terms"}

__all__ = [
    "ANALYSES", "AuditResult", "Dataset", "open_dataset", "run_analysis",
    "domain_counts", "sizes", "scores", "funnel", "languages", "caption_terms",
]


def __getattr__(name: str) -> Any:
    """Analyses load on first use, so ``import sdlab.audit`` stays light."""
    lazy = {
        "domain_counts": ("domains", "domain_counts"), "sizes": ("sizes", "sizes"), "scores": ("scores", "scores"),
        "funnel": ("funnel", "funnel"), "languages": ("languages", "languages"),
        "caption_terms": ("captions", "caption_terms"), "run_amplification": ("amplification", "run_amplification"),
    }
    if name in lazy:
        import importlib

        module, attr = lazy[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(name)


def run_analysis(ds: Dataset, analysis: str, callback: Callback | None = None,
                 progress: bool = False, **options: Any) -> AuditResult:
    """Run one analysis by name (``summary`` or one of :data:`ANALYSES`) with its options."""
    validate_params({"analysis": analysis}, {"analysis": [Options(("summary", *FUNCTIONS))]})
    if analysis == "summary":
        return ds.summary()
    function = __getattr__(FUNCTIONS[analysis])
    takes = [p for p in inspect.signature(function).parameters if p not in ("ds", "callback", "progress")]
    for key, value in options.items():
        if key not in takes:
            raise invalid(key, value, f"not an option of {analysis}, which takes {', '.join(takes)}")
    return function(ds, callback=callback, progress=progress, **options)
