"""A training run's log (``train_log.jsonl``): one JSON record per logged step, read back as a tidy table and a loss curve.

Every training loop in sdlab (the shapes world's stages, the Stable Signature)
appends records with at least ``stage``, ``step``, ``loss`` and ``time`` (Unix
seconds) to ``train_log.jsonl`` in its run directory; other records (a stage's
closing note) are kept in the file and left out of the table.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .io import append_jsonl
from .validation import Options, invalid, validate_params

LOG_NAME = "train_log.jsonl"


def append_log(run_dir: str | Path, record: dict) -> None:
    """Append one record to ``run_dir``'s ``train_log.jsonl``."""
    append_jsonl(Path(run_dir) / LOG_NAME, record)


def read_log(run_dir: str | Path, stage: str | None = None) -> pd.DataFrame:
    """One row per logged step: stage, step, loss, minutes since the run's first line."""
    path = Path(run_dir) / LOG_NAME
    if not path.exists():
        raise invalid("run_dir", str(run_dir), f"a training run's directory (one holding {LOG_NAME})")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    table = pd.DataFrame([r for r in records if "step" in r and "loss" in r], columns=["stage", "step", "loss", "time"])
    table["minutes"] = (table.pop("time") - (records[0]["time"] if records else 0.0)) / 60
    if stage is not None:
        table = table[table.stage == stage].reset_index(drop=True)
    return table


def plot_loss(log: pd.DataFrame, ax=None, x: str = "step"):
    """Training loss against ``x`` ("step", or "minutes" to lay a run's stages end to end), one line per stage, log scale."""
    import matplotlib.pyplot as plt

    validate_params({"x": x}, {"x": [Options(("step", "minutes"))]})
    ax = ax or plt.gca()
    for stage, rows in log.groupby("stage", sort=False):
        ax.plot(rows[x], rows.loss, label=stage)
    ax.set_yscale("log")
    ax.set_xlabel("training step" if x == "step" else "minutes since the run began")
    ax.set_ylabel("loss (weighted MSE, log scale)")
    if log.stage.nunique() > 1:
        ax.legend()
    return ax
