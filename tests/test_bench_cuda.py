"""benchmarks/bench_cuda.py without a GPU: the one-line exit, the inline configs against the real models'
parameter counts (built on the meta device: no memory, no download), and the whole code path at toy widths."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_cuda  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run for minutes")
def test_without_cuda_it_says_so_in_one_line_and_exits_cleanly():
    done = subprocess.run([sys.executable, str(BENCH / "bench_cuda.py")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0
    assert done.stdout.strip().startswith("bench_cuda: no CUDA device") and len(done.stdout.strip().splitlines()) == 1


def test_inline_configs_are_the_published_models():
    """Parameter counts of SD 1.5's and SDXL base's components as published (diffusers' checkpoints)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def count(model) -> int:
        return sum(p.numel() for p in model.parameters())

    with torch.device("meta"):
        assert count(UNet2DConditionModel(**bench_cuda.SD15_UNET)) == 859_520_964
        assert count(UNet2DConditionModel(**bench_cuda.SDXL_UNET)) == 2_567_463_684
        assert count(AutoencoderKL(**bench_cuda.SDXL_VAE)) == count(AutoencoderKL(**bench_cuda.SD_VAE)) == 83_653_863
        assert count(CLIPTextModel(CLIPTextConfig(**bench_cuda.CLIP_L))) == 123_060_480
        assert count(CLIPTextModelWithProjection(CLIPTextConfig(**bench_cuda.CLIP_BIG_G))) == 694_659_840
    assert [bench_cuda.MODELS[m][3:] for m in ("SD 1.5", "SDXL")] == [(512, 25), (1024, 30)]


def _tiny(tmp_path, modes: str) -> list[dict]:
    out = tmp_path / "rows.json"
    assert bench_cuda.main(["--tiny", "--repeat", "1", "--modes", modes, "--json", str(out)]) == 0
    return json.loads(out.read_text())["rows"]


def test_tiny_runs_both_models_through_the_same_code(tmp_path, capsys):
    rows = _tiny(tmp_path, "eager")
    assert [(r["model"], r["mode"], r["steps"]) for r in rows] == [("SD 1.5", "eager", 3), ("SDXL", "eager", 3)]
    assert all(r["seconds_per_image"] > 0 and r["it_per_s"] > 0 for r in rows)
    printed = capsys.readouterr().out
    assert "s/image" in printed and "it/s" in printed and "peak GB" in printed


@pytest.mark.slow
def test_tiny_runs_every_mode(tmp_path):
    rows = _tiny(tmp_path, "eager,channels_last,compile")
    assert [r["mode"] for r in rows] == ["eager", "channels_last", "compile"] * 2
    assert all("skipped" not in r for r in rows), rows


def test_a_spent_budget_skips_modes_and_says_so(tmp_path):
    out = tmp_path / "rows.json"
    assert bench_cuda.main(["--tiny", "--models", "SD 1.5", "--modes", "compile", "--budget", "0", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["skipped"].startswith("time budget")


def test_unknown_names_are_refused_in_one_line(capsys):
    with pytest.raises(SystemExit):
        bench_cuda.main(["--tiny", "--modes", "fast"])
    assert "--modes: fast not valid; valid: eager, channels_last, compile" in capsys.readouterr().err
