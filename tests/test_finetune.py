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
from sdlab.mini.train import latent_foreground


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
