"""Fine-tuning a shapes-world UNet: the shape mask, the frozen parts, resume, and the CLI's errors."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from sdlab.errors import ValidationError
from sdlab.mini import world
from sdlab.mini.finetune import FinetuneConfig, finetune
from sdlab.mini.stages.foreground import latent_foreground


def _scene_image(**overrides) -> np.ndarray:
    scene = world.sample_scene(np.random.default_rng(0), shape="square", size="small", position="top left", background="black", colour="white")
    scene = world.Scene(**{**scene.__dict__, "cx": 18.0, "cy": 18.0, "radius": 6.0, "rotation": 0.0, **overrides})
    return np.array(world.render(scene))[None]


def test_latent_foreground_marks_the_shape_cells_and_their_neighbours():
    image = _scene_image()  # a square spanning pixels 12..24, i.e. latent cells 3..5 at factor 4
    plain = latent_foreground(image, 16, dilation=0)[0, 0]
    rows, cols = np.nonzero(plain.numpy())
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (3, 5, 3, 5)
    assert plain.sum() == 9
    dilated = latent_foreground(image, 16, dilation=1)[0, 0]
    assert dilated.sum() == 25 and dilated[2:7, 2:7].all()
    blank = np.full_like(image, 10)
    assert latent_foreground(blank, 16).sum() == 0


def test_finetune_trains_only_the_unet_resumes_and_records_itself(tiny_pipeline_dir, tmp_path):
    cfg = FinetuneConfig(steps=3, warmup_steps=1, foreground_weight=4.0, checkpoint_minutes=0.0)
    target = finetune(tiny_pipeline_dir, tmp_path, cfg, progress=False)
    before, after = StableDiffusionPipeline.from_pretrained(tiny_pipeline_dir), StableDiffusionPipeline.from_pretrained(target)
    for part in ("vae", "text_encoder"):
        old, new = getattr(before, part).state_dict(), getattr(after, part).state_dict()
        assert all(torch.equal(old[k], new[k]) for k in old), part
    old, new = before.unet.state_dict(), after.unet.state_dict()
    assert any(not torch.equal(old[k], new[k]) for k in old)
    meta = json.loads((target / "sdlab.json").read_text())
    assert "foreground weight 4" in meta["training"]["history"][-1]
    assert meta["training"]["unet_foreground_weight"] == 4.0 and meta["training"]["unet_steps"] == 3
    assert meta["defaults"] == json.loads((tiny_pipeline_dir / "sdlab.json").read_text())["defaults"]
    logged = (tmp_path / "train_log.jsonl").read_text().splitlines()
    finetune(tiny_pipeline_dir, tmp_path, cfg, progress=False)  # done: nothing is trained again
    again = (tmp_path / "train_log.jsonl").read_text().splitlines()[len(logged):]
    assert [json.loads(line)["stage"] for line in again] == ["finetune_done"]


def test_foreground_weight_changes_what_the_unet_learns(tiny_pipeline_dir, tmp_path):
    weights = []
    for fw in (0.0, 8.0):
        target = finetune(tiny_pipeline_dir, tmp_path / f"fw{fw}", FinetuneConfig(steps=2, warmup_steps=1, foreground_weight=fw), progress=False)
        weights.append(StableDiffusionPipeline.from_pretrained(target).unet.state_dict())
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("field, value", [("steps", 0), ("lr", 0.0), ("foreground_weight", -1.0)])
def test_config_names_the_bad_field(field, value):
    with pytest.raises(ValidationError, match=field):
        FinetuneConfig(**{field: value})


def test_cli_refuses_a_directory_that_is_no_shapes_world_model(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sdlab", "mini", "finetune", str(tmp_path), "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: model:") and "Traceback" not in proc.stderr


def test_cancel_checkpoints_the_step_and_a_rerun_resumes_there(tiny_pipeline_dir, tmp_path):
    from sdlab.errors import Cancelled

    def stop_after_two(step, total):
        assert total == 4
        if step == 2:
            raise Cancelled("cancelled by the user")

    cfg = FinetuneConfig(steps=4, warmup_steps=1, checkpoint_minutes=60.0)
    with pytest.raises(Cancelled):
        finetune(tiny_pipeline_dir, tmp_path, cfg, progress=False, callback=stop_after_two)
    assert torch.load(tmp_path / "unet.ckpt", weights_only=True)["step"] == 2
    seen = []
    finetune(tiny_pipeline_dir, tmp_path, cfg, progress=False, callback=lambda step, total: seen.append(step))
    assert seen == [3, 4]


def test_read_log_is_one_row_per_logged_step(tiny_pipeline_dir, tmp_path):
    from sdlab.trainlog import plot_loss, read_log

    finetune(tiny_pipeline_dir, tmp_path, FinetuneConfig(steps=101, warmup_steps=1, checkpoint_minutes=60.0), progress=False)
    log = read_log(tmp_path, stage="unet")
    assert log.step.tolist() == [0, 50, 100] and (log.loss > 0).all() and log.minutes.is_monotonic_increasing
    import matplotlib.pyplot as plt

    ax = plot_loss(log, plt.subplots()[1])  # a fresh axes: plt.gca() may hold an earlier test's figure
    assert ax.get_xlabel() == "training step" and len(ax.lines) == 1
    with pytest.raises(ValidationError, match="run_dir"):
        read_log(tmp_path / "nothing")


def test_finetune_panel_runs_and_shows_the_loss_and_a_sample(tiny_pipeline_dir, tmp_path):
    from sdlab.widgets.finetune import FinetunePanel

    panel = FinetunePanel(model=str(tiny_pipeline_dir), out_dir=str(tmp_path / "run"))
    panel.steps.value, panel.foreground_weight.value = 2, 4.0
    panel.start(background=False)
    assert panel.last_error is None and panel.exported == tmp_path / "run" / "pipeline"
    assert panel.progress.value == panel.progress.max == 2
    assert panel.loss_plot.value[:4] == b"\x89PNG" and panel.sample.value[:4] == b"\x89PNG"
    meta = json.loads((panel.exported / "sdlab.json").read_text())
    assert "foreground weight 4" in meta["training"]["history"][-1]
    panel.lr.value = 0.0
    panel.start(background=False)
    assert panel.last_error == "lr: 0.0 is not valid; valid: a number > 0"
