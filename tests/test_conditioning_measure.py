"""What control does, measured through sdlab's generate: zero convolutions, the shipped ControlNets in plain diffusers,
fidelity, conflicts, layout, and the panel."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sdlab.conditioning import measure
from sdlab.conditioning.train import ControlNetConfig, embedding_channels

SHIPPED = Path(__file__).resolve().parents[1] / "sdlab" / "weights"
STEPS = 4  # denoising steps: enough to tell pixels apart, quick


@pytest.fixture(scope="module")
def world():
    from sdlab.models import load_pipeline

    return load_pipeline("shapes-world", device="cpu")


@pytest.fixture(scope="module")
def edges():
    from diffusers import ControlNetModel

    return ControlNetModel.from_pretrained(SHIPPED / "shapes-world-controlnet-edges")


@pytest.fixture(scope="module")
def cases():
    from sdlab.mini.control_data import heldout_cases

    return heldout_cases(2, "edges")


def test_iou_of_masks():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    a[:2], b[1:3] = True, True
    assert measure.iou(a, b) == pytest.approx(4 / 12)
    assert measure.iou(a, a) == 1.0 and measure.iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


def test_zero_convolutions_change_no_pixel_and_scale_0_neither(world, edges, cases):
    from diffusers import ControlNetModel

    untrained = ControlNetModel.from_unet(world.unet, conditioning_embedding_out_channels=embedding_channels(world.vae_scale_factor, ControlNetConfig()))
    row = cases["table"].iloc[0]
    table = measure.zero_convolution(world, untrained, edges, row.prompt, int(row.seed), cases["maps"][0], steps=STEPS).set_index("comparison")
    assert table.loc["untrained ControlNet, scale 1", "pixels_changed"] == 0
    assert table.loc["trained ControlNet, scale 0", "pixels_changed"] == 0
    assert table.loc["trained ControlNet, scale 1", "pixels_changed"] > 100  # the trained one does act


@pytest.mark.parametrize("kind", ["edges", "mask"])
def test_shipped_controlnet_in_plain_diffusers_gives_sdlabs_image(world, kind):
    """The shipped weights load with ControlNetModel.from_pretrained and run in StableDiffusionControlNetPipeline:
    same scheduler, noise and prompt -> the same pixels as sdlab's generate."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from PIL import Image

    from sdlab.mini.control_data import heldout_cases
    from sdlab.samplers import make_scheduler, scheduler_config

    directory = SHIPPED / f"shapes-world-controlnet-{kind}"
    net = ControlNetModel.from_pretrained(directory)
    assert sum(f.stat().st_size for f in directory.iterdir()) <= 10 * 2**20
    case = heldout_cases(1, kind)
    row = case["table"].iloc[0]
    ours = measure.generate_one(world, row.prompt, int(row.seed), net, case["maps"][0], 1.0, steps=STEPS, guidance=5.0, control_type=kind)
    runner = StableDiffusionControlNetPipeline(**{k: v for k, v in world.components.items() if k != "image_encoder"}, controlnet=net)
    runner.scheduler = make_scheduler("DPM++ 2M", scheduler_config(world))
    runner.set_progress_bar_config(disable=True)
    theirs = runner(row.prompt, image=Image.fromarray(case["maps"][0]), num_inference_steps=STEPS, guidance_scale=5.0, height=64, width=64,
                    generator=torch.Generator().manual_seed(int(row.seed))).images[0]
    assert np.array_equal(ours, np.asarray(theirs))


def test_fidelity_rows_and_scale_0_equals_no_control(world, edges, cases):
    from sdlab.mini.control_data import shape_region

    table = measure.fidelity(world, edges, cases, shape_region, scales=(0.0, 1.0), steps=STEPS)
    base = measure.fidelity(world, None, cases, shape_region, steps=STEPS)
    assert len(table) == 4 and table.iou.between(0, 1).all() and base.scale.isna().all()
    assert np.allclose(table[table.scale == 0].iou.to_numpy(), base.iou.to_numpy())  # scale 0 is the model without control
    summary = measure.summarize(table)
    assert list(summary.scale) == [0.0, 1.0] and (summary.n == 2).all()


def test_conflicts_name_the_winner(world, edges):
    import pandas as pd

    from sdlab.mini.control_data import condition_maps, conflict_cases, scene_images

    table = conflict_cases().iloc[[0, 3]].reset_index(drop=True)  # a position conflict and a shape conflict
    maps = condition_maps(scene_images(table.scene), "edges", "outline")
    said = {"position": table.control_says[0], "shape": table.control_says[1]}
    result = measure.conflicts(world, edges, table, maps, judge=lambda image: said, scales=(1.0,), guidances=(5.0,), steps=STEPS)
    assert list(result.winner) == ["control", "control"]
    flipped = {"position": table.prompt_says[0], "shape": "star"}
    result = measure.conflicts(world, edges, table, maps, judge=lambda image: flipped, scales=(1.0,), guidances=(5.0,), steps=STEPS)
    assert list(result.winner) == ["prompt", "neither"]
    pivot = measure.conflict_table(pd.concat([result]))
    assert pivot.loc[("position", 5.0), 1.0] == 0.0


def test_conflicts_under_each_control_mode(world, edges):
    from sdlab.control.infotext import CONTROL_MODES
    from sdlab.errors import ValidationError
    from sdlab.mini.control_data import condition_maps, conflict_cases, scene_images

    table = conflict_cases().iloc[[3]].reset_index(drop=True)
    maps = condition_maps(scene_images(table.scene), "edges", "outline")
    pixels = lambda image: {"shape": int(image.astype(np.int64).sum())}  # noqa: E731  # tells the images apart
    result = measure.conflicts(world, edges, table, maps, judge=pixels, scales=(1.0,), guidances=(5.0,), steps=STEPS, modes=CONTROL_MODES)
    assert list(result["mode"]) == list(CONTROL_MODES) and result["found"].nunique() == 3  # three modes, three images
    assert list(measure.conflict_table(result).index.names) == ["kind", "mode", "guidance"]
    with pytest.raises(ValidationError, match="modes"):
        measure.conflicts(world, edges, table, maps, judge=pixels, modes=("Loud",))


def test_keep_layout_rows_per_method(world, edges, cases):
    import pandas as pd

    from sdlab.mini.control_data import shape_region

    layout = {"table": pd.DataFrame({"prompt": ["a large blue circle in the center on a white background"], "seed": [3],
                                     "want_colour": ["blue"]}),
              "images": cases["images"][:1], "maps": cases["maps"][:1], "masks": cases["masks"][:1]}
    table = measure.keep_layout(world, edges, layout, shape_region, judge=lambda image: {"colour": "blue"}, strengths=(0.5,), steps=STEPS)
    assert list(table.method) == ["txt2img", "img2img 0.5", "ControlNet 1"]
    assert table.colour_ok.all() and table.layout_iou.between(0, 1).all()
    from sdlab.errors import ValidationError

    with pytest.raises(ValidationError, match="^strength: 1.5 is not valid"):
        measure.keep_layout(world, edges, layout, shape_region, judge=lambda image: {}, strengths=(0.5, 1.5))


@pytest.mark.slow
def test_panel_trains_resumes_and_measures(world, tmp_path):
    from sdlab.widgets.conditioning import ConditioningPanel

    panel = ConditioningPanel(world, out_dir=str(tmp_path / "run"), cases=1, scales="0,1")
    panel.steps.value, panel.images.value = 2, 4
    panel.guided_weight.value = -1.0
    panel.start_training(background=False)
    assert panel.last_error.startswith("guided_weight: -1.0 is not valid")
    panel.guided_weight.value, panel.timestep_range.value = 0.0, "300,0"
    panel.start_training(background=False)
    assert panel.last_error.startswith("timestep_range: (300, 0) is not valid")
    panel.timestep_range.value = "0-300"
    panel.start_training(background=False)
    assert panel.last_error.startswith("timestep_range: '0-300' is not valid")
    panel.guided_weight.value, panel.guided_cfg.value, panel.lr_scheduler.value = 1.0, 3.0, "cosine"
    panel.timestep_range.value, panel.init.value = "0,300", "shapes-world-edges"
    panel.start_training(background=False)
    assert panel.last_error is None and Path(panel.controlnet.value).name == "controlnet"
    saved = json.loads((tmp_path / "run" / "controlnet_config.json").read_text())
    assert (saved["guided_weight"], saved["guided_cfg"], saved["lr_scheduler"], saved["timestep_range"]) == (1.0, 3.0, "cosine", [0, 300])
    assert saved["init"].startswith("shapes-world-edges [")
    panel.start_measure(background=False)
    assert panel.last_error is None and list(panel.table.scale) == [0.0, 1.0]
    panel.scales.value = "0,5"
    panel.start_measure(background=False)
    assert panel.last_error.startswith("scales: '0,5' is not valid")
