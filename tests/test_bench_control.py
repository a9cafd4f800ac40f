"""benchmarks/bench_control.py's training figures: a ControlNet made in stages (a run continued with ``--init``)
is timed as the sum of its runs, as the shipped edge ControlNet's two-stage recipe is."""
from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_control  # noqa: E402


def _run(directory: Path, steps: int, seconds: list[float], load: float) -> Path:
    """A run directory whose log holds ``steps`` steps and one finished session per entry of ``seconds``."""
    directory.mkdir()
    lines = [{"stage": "controlnet", "step": s, "loss": 0.1, "time": 1000.0 + s, "load": load} for s in range(0, steps, 25)]
    lines.append({"stage": "controlnet", "step": steps - 1, "loss": 0.1, "time": 1000.0 + steps, "load": load})
    lines += [{"stage": "controlnet_done", "seconds_this_run": t, "time": 2000.0} for t in seconds]
    (directory / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return directory


def test_a_recipe_of_stages_adds_up_its_runs(tmp_path):
    first = _run(tmp_path / "first", 2500, [600.0, 600.0], load=2.0)  # killed once and resumed: two sessions
    second = _run(tmp_path / "second", 500, [270.0], load=1.0)
    one = bench_control.training_figures([str(first)])
    assert (one["train_minutes"], one["train_steps"], one["train_stages"], one["finished"]) == (20.0, 2500, 1, True)
    both = bench_control.training_figures([str(first), str(second)])
    assert (both["train_minutes"], both["train_steps"], both["train_stages"]) == (24.5, 3000, 2)
    assert 1.0 < both["train_mean_load"] < 2.0  # the mean over every logged step of both runs


def test_an_unfinished_run_is_timed_from_its_log_and_marked(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_log.jsonl").write_text("".join(json.dumps({"stage": "controlnet", "step": s, "time": 100.0 + 2 * s, "load": 1.5}) + "\n"
                                                for s in (0, 25, 50)))
    figures = bench_control.training_figures([str(run)])
    assert figures["train_minutes"] == 100 / 60 and figures["train_steps"] == 51 and not figures["finished"]
