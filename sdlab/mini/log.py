"""A training run's log (``train_log.jsonl``) as a tidy table, and its loss curve."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..errors import ValidationError


def read_log(run_dir: str | Path, stage: str | None = None) -> pd.DataFrame:
    """One row per logged step: stage, step, loss, minutes since the run's first line."""
    path = Path(run_dir) / "train_log.jsonl"
    if not path.exists():
        raise ValidationError(f"run_dir: {run_dir} holds no train_log.jsonl (not a 'mini train' or 'mini finetune' run)")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    table = pd.DataFrame([r for r in records if "step" in r and "loss" in r], columns=["stage", "step", "loss", "time"])
    table["minutes"] = (table.pop("time") - (records[0]["time"] if records else 0.0)) / 60
    if stage is not None:
        table = table[table.stage == stage].reset_index(drop=True)
    return table


def plot_loss(log: pd.DataFrame, ax=None, x: str = "step"):
    """Training loss against ``x`` ("step", or "minutes" to lay a run's stages end to end), one line per stage, log scale."""
    import matplotlib.pyplot as plt

    if x not in ("step", "minutes"):
        raise ValidationError(f"x: must be step or minutes, got {x!r}")
    ax = ax or plt.gca()
    for stage, rows in log.groupby("stage", sort=False):
        ax.plot(rows[x], rows.loss, label=stage)
    ax.set_yscale("log")
    ax.set_xlabel("training step" if x == "step" else "minutes since the run began")
    ax.set_ylabel("loss (weighted MSE, log scale)")
    if log.stage.nunique() > 1:
        ax.legend()
    return ax
