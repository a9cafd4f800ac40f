"""``sdlab train controlnet``: one-line refusals (exit 2) before any model load; a short run writes a loadable ControlNet."""
from __future__ import annotations

import json

import pytest

from sdlab.cli import main


def _run(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exit:  # argparse's own refusals
        return int(exit.code)


@pytest.fixture
def no_model_load(monkeypatch):
    import sdlab.models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(sdlab.models, "load_pipeline", refuse)


@pytest.mark.parametrize("extra, words", [
    (["--steps", "0"], "steps: 0 is not valid"),
    (["--lr", "-1"], "lr: -1.0 is not valid"),
    (["--text-dropout", "2"], "text_dropout: 2.0 is not valid"),
    (["--guided-weight", "-1"], "guided_weight: -1.0 is not valid"),
    (["--guided-cfg", "0"], "guided_cfg: 0.0 is not valid"),
    (["--unconditional-weight", "-0.5"], "unconditional_weight: -0.5 is not valid"),
    (["--lr-scheduler", "linear"], "lr_scheduler: 'linear' is not valid"),
    (["--images", "0"], "--images: 0 is not valid"),
    (["--timestep-range", "300", "0"], "timestep_range: (300, 0) is not valid"),
    (["--init", "no/such/controlnet"], "--init: 'no/such/controlnet' is not valid"),
    (["--model", "no/such/dir"], "--model: 'no/such/dir' is not valid"),
    (["--condition", "depth"], "invalid choice: 'depth'"),
])
def test_bad_values_exit_2_with_one_line(no_model_load, tmp_path, capsys, extra, words):
    argv = ["train", "controlnet", "--condition", "edges", "--out", str(tmp_path / "run"), *extra]
    if "--condition" in extra:
        argv = ["train", "controlnet", "--out", str(tmp_path / "run"), *extra]
    code = _run(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and words in err


def test_a_run_directory_needs_resume_and_a_file_is_refused(no_model_load, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "controlnet.ckpt").write_bytes(b"")
    assert main(["train", "controlnet", "--condition", "mask", "--out", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["train", "controlnet", "--condition", "mask", "--out", str(tmp_path / "file")]) == 2
    assert "a directory" in capsys.readouterr().err


@pytest.mark.slow
def test_a_short_run_resumes_and_writes_a_loadable_controlnet(tmp_path, capsys):
    from diffusers import ControlNetModel

    run = tmp_path / "run"
    args = ["train", "controlnet", "--condition", "mask", "--out", str(run), "--images", "8", "--batch", "2", "--quiet",
            "--guided-weight", "0.5", "--guided-cfg", "3", "--unconditional-weight", "0.25"]
    assert main([*args, "--steps", "1"]) == 0
    saved = json.loads((run / "controlnet_config.json").read_text())
    assert (saved["guided_weight"], saved["guided_cfg"], saved["unconditional_weight"]) == (0.5, 3.0, 0.25)
    assert main([*args, "--steps", "1"]) == 2  # a second start without --resume is refused
    capsys.readouterr()
    assert main([*args, "--steps", "1", "--lr", "1e-3", "--resume"]) == 2  # a different setting is not a resume
    assert "lr" in capsys.readouterr().err
    assert main([*args, "--steps", "2", "--resume"]) == 0  # more steps continue the run
    model = ControlNetModel.from_pretrained(capsys.readouterr().out.strip().splitlines()[-1])
    assert model.config.conditioning_embedding_out_channels == [16, 32, 96]  # the shapes world's VAE downsamples by 4
