"""Sweeps: vary spec fields along up to three axes, measure every image, resume after a kill.

An :class:`Axis` is a spec field and its values (lists, or A1111's range
syntax: ``1-5``, ``1-5 (+2)``, ``0.5-2 (+0.25)``, ``1-10 [4]``). The axes'
product (times an optional list of prompts) gives the cells; each cell is one
image. :func:`run_sweep` runs them in batches, here or on a Dask cluster, into
a resumable :class:`ResultStore`; the views draw grids and summarize metrics.

- ``axes``: parsing axes, the cells (no torch, no pandas: bad input fails at once);
- ``store``: the result store;
- ``run``: what each image measures, the batches, the run;
- ``views``: grids, bootstrap intervals, diversity, plots.
"""
from .axes import FIELDS, NUMERIC, Axis, Cell, expand, parse_values
from .run import IMAGE_METRICS, Metric, default_metrics, describe, plan, resolve_metrics, run_batch, run_sweep, saturation_metric
from .store import ResultStore, spec_row
from .views import bootstrap_ci, diversity, grid, plot_metric, summarize

__all__ = [
    "FIELDS", "IMAGE_METRICS", "NUMERIC", "Axis", "Cell", "Metric", "ResultStore", "bootstrap_ci", "default_metrics",
    "describe", "diversity", "expand", "grid", "parse_values", "plan", "plot_metric", "resolve_metrics", "run_batch",
    "run_sweep", "saturation_metric", "spec_row", "summarize",
]
