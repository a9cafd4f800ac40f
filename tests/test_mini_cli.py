"""sdlab mini data / eval from the command line (on a few-step pipeline: the format, not the accuracy)."""
import json
import subprocess
import sys

import pandas as pd


def _sdlab(*args):
    return subprocess.run([sys.executable, "-m", "sdlab", *args], capture_output=True, text=True)


def test_mini_data_writes_images_and_laion_style_metadata(tmp_path):
    proc = _sdlab("mini", "data", "--out", str(tmp_path), "-n", "12", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    meta = pd.read_parquet(tmp_path / "metadata.parquet")
    assert len(meta) == 12 and {"URL", "TEXT", "WIDTH", "HEIGHT", "source", "shape", "file"} <= set(meta.columns)
    assert all((tmp_path / f).exists() for f in meta["file"])


def test_mini_eval_json(tiny_pipeline_dir):
    proc = _sdlab("mini", "eval", str(tiny_pipeline_dir), "--prompts", "4", "--guidance", "1,5", "--seeds", "2", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert [row["guidance"] for row in report["accuracy"]] == [1.0, 5.0]
    assert {"shape", "colour", "size", "position", "background", "all", "saturation"} <= set(report["accuracy"][0])
    assert {"skews", "negative_prompt", "diversity", "best_guidance", "seconds"} <= set(report)
    assert all(0 <= row["generated_share"] <= 1 for row in report["skews"])
