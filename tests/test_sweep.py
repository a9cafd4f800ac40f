"""Sweeps: range syntax, batching equivalence, the resumable store, views."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sdlab.errors import StoreError, ValidationError
from sdlab.generate import generate, generate_many
from sdlab.models import load_pipeline
from sdlab.spec import GenerationSpec
from sdlab.sweep import Axis, bootstrap_ci, expand, grid, parse_values, run_sweep, saturation_metric, summarize


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return load_pipeline(str(tiny_pipeline_dir), device="cpu")


@pytest.mark.parametrize("field, text, expected", [
    ("seed", "1-5", [1, 2, 3, 4, 5]),
    ("seed", "1-5 (+2)", [1, 3, 5]),
    ("guidance", "0.5-2 (+0.25)", [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]),
    ("steps", "1-10 [4]", [1, 4, 7, 10]),
    ("guidance", "1, 3, 7.5", [1.0, 3.0, 7.5]),
    ("seed", "5-1", [5, 4, 3, 2, 1]),
    ("seed", "1-3, 10", [1, 2, 3, 10]),
    ("sampler", '"Euler a", DPM++ 2M', ["Euler a", "DPM++ 2M"]),
])
def test_range_syntax(field, text, expected):
    assert parse_values(field, text) == expected


@pytest.mark.parametrize("text, message", [
    ("seed=1-x", "not a number or a range"),
    ("seed=1-5 (+0)", "never gets from"),
    ("seed=1-5 (-1)", "never gets from"),
    ("steps=1-2 [3]", "whole numbers"),
    ("colour=red", "not known"),
    ("seed", "must be NAME=VALUES"),
    ("cfg=", "no values"),
])
def test_bad_axes_are_named(text, message):
    with pytest.raises(ValidationError, match=message):
        Axis.parse(text)


def test_cells_and_search_replace():
    cells = expand(GenerationSpec("a red circle", steps=3), [Axis.parse("seed=1-2"), Axis.parse("prompt=red,blue,green")])
    assert len(cells) == 6
    assert [c.spec.prompt for c in cells[:2]] == ["a red circle", "a red circle"]  # X (seed) varies fastest
    assert {c.spec.prompt for c in cells} == {"a red circle", "a blue circle", "a green circle"}
    # the S/R values get their own column: prompt_index stays the place in the prompts list
    assert [(c.coords["prompt_index"], c.coords["sr"], c.coords["sr_index"]) for c in cells[::2]] == [(0, "red", 0), (0, "blue", 1), (0, "green", 2)]
    with pytest.raises(ValidationError, match="does not occur"):
        expand(GenerationSpec("a circle"), [Axis.parse("prompt=red,blue")])


def test_batched_guidance_equals_one_call_per_value(pipe):
    specs = [GenerationSpec("a red circle", seed=3, steps=5, guidance=g) for g in (1.0, 2.5, 7.5, 15.0)]
    batched = generate_many(pipe, specs)
    for (image, spec), original in zip(batched, specs):
        alone = generate(pipe, original).images[0]
        assert spec.guidance == original.guidance
        assert np.abs(np.asarray(image, np.int16) - np.asarray(alone, np.int16)).max() <= 2


def test_sweep_store_resumes_without_duplicates(pipe, tmp_path, monkeypatch):
    import sdlab.generate as gen

    base = GenerationSpec("a red circle", steps=3, sampler="Euler")
    axes = [Axis.parse("seed=1-3"), Axis.parse("cfg=1,4")]
    calls = {"n": 0}
    real = gen.generate_many

    def dying(*args, **kwargs):  # the second batch "kills" the sweep
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(gen, "generate_many", dying)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(pipe, base, axes, tmp_path, max_batch=4, progress=False)
    partial = pd.read_parquet(tmp_path / "results.parquet")
    assert len(partial) == 4  # the first batch was written before the second started
    monkeypatch.setattr(gen, "generate_many", real)
    table = run_sweep(pipe, base, axes, tmp_path, max_batch=4, progress=False)
    assert len(table) == 6 and table["cell"].is_unique
    assert sorted(zip(table.seed, table.guidance)) == [(s, g) for s in (1, 2, 3) for g in (1.0, 4.0)]
    assert len(list((tmp_path / "images").glob("*.png"))) == 6
    with pytest.raises(StoreError, match="other arguments"):
        run_sweep(pipe, base, [Axis.parse("seed=1-4")], tmp_path, progress=False)
    fresh = run_sweep(pipe, base, [Axis.parse("seed=1-2")], tmp_path, new=True, progress=False)
    assert len(fresh) == 2 and (tmp_path / "archive-000" / "results.parquet").exists()


def test_grid_and_summaries(pipe, tmp_path):
    table = run_sweep(pipe, GenerationSpec("a red circle", steps=2), [Axis.parse("seed=1-2"), Axis.parse("cfg=1,5")], tmp_path, progress=False)
    image = grid(table, tmp_path, "seed", "guidance", cell=32)
    assert image.width > 2 * 32 and image.height > 2 * 32
    s = summarize(table, "saturation", ["guidance"])
    assert list(s["guidance"]) == [1.0, 5.0] and (s["ci_low"] <= s["mean"]).all() and (s["mean"] <= s["ci_high"]).all()


def test_bootstrap_ci_hand_example():
    lo, hi = bootstrap_ci(np.array([1.0, 1.0, 1.0]))
    assert lo == hi == 1.0
    lo, hi = bootstrap_ci(np.array([0.0, 1.0] * 50))
    assert 0.38 < lo < 0.5 < hi < 0.62


def test_sweep_panel_runs_and_shows_the_grid(pipe, tmp_path):
    from sdlab.widgets.sweep import SweepPanel

    panel = SweepPanel(pipe, out_dir=str(tmp_path / "store"))
    panel.steps.value = 2
    panel.axes[0][1].value, panel.axes[1][1].value = "1-2", "1,5"
    panel.start(background=False)
    assert panel.last_error is None and len(panel.table) == 4
    assert panel.grid_view.value[:4] == b"\x89PNG"
    assert panel.plot.value[:4] == b"\x89PNG"  # the metric plot is drawn
    panel.axes[0][1].value = "1-x"
    panel.start(background=False)
    assert "not a number or a range" in panel.last_error
    panel.axes[0][1].value, panel.axes[1][1].value = "1-9000", "1-9000"  # 81 million cells: refused with the estimate
    panel.start(background=False)
    assert panel.last_error.startswith("cells: '81000000 cells' is not valid; valid: work under 2 h here")


def test_saturation_metric_counts_clipped_pixels():
    image = np.full((4, 4, 3), 128, np.uint8)
    image[0, :, 0] = 255  # 4 pixels with red at the top of its range
    image[1, :2, 2] = 0  # 2 pixels with no blue
    measured = saturation_metric(image, GenerationSpec("a circle"))
    assert measured["clipped_share"] == 6 / 16
    assert 0 < measured["saturation"] < 1
    assert saturation_metric(np.full((4, 4, 3), 128, np.uint8), GenerationSpec("a circle")) == {"saturation": 0.0, "clipped_share": 0.0}
