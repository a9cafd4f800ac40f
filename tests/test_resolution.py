"""Away from the native size: the hires fix (sdlab.hires), the size study (sdlab.resolution) and the
shapes world's duplicated-shapes measure (sdlab.mini.resolution)."""
from __future__ import annotations

import numpy as np
import pytest

from sdlab.errors import ValidationError
from sdlab.generate import generate
from sdlab.hires import HiresResult, hires_fix, hires_settings, hires_size, schedule_length
from sdlab.metadata import format_parameters, spec_from_parameters
from sdlab.mini import world
from sdlab.mini.resolution import count_shapes, size_metric
from sdlab.models import load_pipeline
from sdlab.resolution import measure_sizes, summarize
from sdlab.spec import GenerationSpec

PROMPT = "a large red circle at the top left on a white background"


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return load_pipeline(tiny_pipeline_dir, device="cpu")


@pytest.fixture(scope="module")
def fixed(pipe):
    """One hires fix (64 -> 128, Lanczos, 3 second-pass steps at strength 0.5) and its spec."""
    spec = GenerationSpec(PROMPT, seed=7, steps=3)
    return spec, hires_fix(pipe, spec, scale=2, strength=0.5, steps=3)


def _same(a, b) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_hires_fix_makes_the_target_size_from_a_first_pass_at_native_size(pipe, fixed):
    spec, result = fixed
    assert isinstance(result, HiresResult) and result.images[0].size == (128, 128)
    assert result.first_pass.images[0].size == (64, 64)
    assert _same(result.first_pass.images[0], generate(pipe, spec).images[0])
    assert set(result.timings) == {"total", "first_pass", "second_pass", "per_image"}


def test_hires_fix_same_seed_same_image(pipe, fixed):
    spec, result = fixed
    assert _same(hires_fix(pipe, spec, scale=2, strength=0.5, steps=3).images[0], result.images[0])
    assert not _same(hires_fix(pipe, spec.replace(seed=8), scale=2, strength=0.5, steps=3).images[0], result.images[0])


def test_hires_fix_records_its_parameters_as_a1111_writes_them(fixed):
    _, result = fixed
    spec = result.specs[0]
    assert (spec.width, spec.height, spec.steps, spec.seed) == (64, 64, 3, 7)  # A1111: Size is the first pass's
    text = format_parameters(spec)
    assert "Size: 64x64" in text and text.endswith("Hires upscale: 2, Hires steps: 3, Hires upscaler: Lanczos, Denoising strength: 0.5")
    assert hires_settings(spec_from_parameters(text)) == {"scale": 2.0, "strength": 0.5, "upscaler": "lanczos", "steps": 3}
    assert hires_settings(GenerationSpec(PROMPT)) is None


def test_latent_upscaler_and_batches(pipe):
    spec = GenerationSpec(PROMPT, seed=3, steps=2, batch_size=2)
    seen = []
    result = hires_fix(pipe, spec, scale=1.5, strength=0.6, upscaler="latent", callback=lambda d, t: seen.append((d, t)))
    assert [im.size for im in result.images] == [(96, 96)] * 2 and [s.seed for s in result.specs] == [3, 4]
    assert seen[-1] == (6, 6) and [d for d, _ in seen] == sorted(d for d, _ in seen)  # 2 + 2 x 2 steps
    assert "Hires steps" not in result.specs[0].extra and result.specs[0].extra["Hires upscaler"] == "Latent"
    single = hires_fix(pipe, spec.replace(seed=4, batch_size=1), scale=1.5, strength=0.6, upscaler="latent")
    # image k of a batch is the single image of seed s + k, up to batched arithmetic (the first pass differs by <= 1 level)
    assert np.abs(np.asarray(single.images[0], int) - np.asarray(result.images[1], int)).mean() < 1.0


@pytest.mark.parametrize("name", ["sd1", "sd2", "sd2-inpaint", "sdxl", "sd3"])
def test_hires_fix_on_every_family(family_dir, name):
    pipe = load_pipeline(family_dir(name), device="cpu")
    result = hires_fix(pipe, GenerationSpec("a red circle", seed=1, steps=2, sampler="Euler"), scale=2, strength=0.5,
                       upscaler="latent" if name in ("sdxl", "sd3") else "lanczos")
    assert result.images[0].size == (128, 128) and np.ptp(np.asarray(result.images[0])) > 10


def test_second_pass_runs_the_hires_steps_whatever_the_strength():
    for steps in (1, 3, 10, 25):
        for strength in (0.05, 0.3, 0.5, 0.7, 0.75, 0.999, 1.0):
            n = schedule_length(steps, strength)
            assert int(n * strength) == steps and n >= steps
    assert (schedule_length(10, 0.5), schedule_length(10, 0.7), schedule_length(10, 1.0)) == (20, 15, 10)


def test_hires_size_rounds_down_to_the_model_multiple(pipe):
    assert hires_size(pipe, 64, 64, 2) == (128, 128)
    assert hires_size(pipe, 64, 48, 1.55) == (96, 72)  # 99.2 -> 96, 74.4 -> 72 (multiples of 4 for the shapes world)


@pytest.mark.parametrize("kwargs, message", [
    ({"scale": 1}, r"^scale: 1 is not valid; valid: a number in \(1, 8\]$"),
    ({"scale": 1.01}, r"^scale: 1.01 is not valid; valid: a factor that enlarges 64x64 by at least 4 pixels$"),
    ({"strength": 0}, r"^strength: 0 is not valid; valid: a number in \(0, 1\]$"),
    ({"upscaler": "ESRGAN"}, r"^upscaler: 'ESRGAN' is not valid; valid: one of lanczos, latent$"),
    ({"steps": 0}, r"^steps: 0 is not valid; valid: a whole number >= 1 or None$"),
])
def test_hires_fix_refuses_in_one_line(pipe, kwargs, message):
    with pytest.raises(ValidationError, match=message):
        hires_fix(pipe, GenerationSpec(PROMPT, seed=1, steps=1), **kwargs)


def test_hires_fix_refuses_an_img2img_spec(pipe):
    spec = GenerationSpec(PROMPT, seed=1, init_image=np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValidationError, match=r"^spec: 'a img2img spec' is not valid; valid: a text-to-image spec"):
        hires_fix(pipe, spec)


def _scene(**attrs) -> np.ndarray:
    return np.asarray(world.render(world.sample_scene(np.random.default_rng(0), **attrs)))


def test_count_shapes_counts_separate_shapes():
    one = _scene(shape="circle", colour="red", size="large", position="center", background="white")
    assert count_shapes(one) == 1
    assert count_shapes(np.concatenate([one, one], axis=1)) == 2  # 128 x 64: the subject twice
    assert count_shapes(np.full((64, 64, 3), 250, np.uint8)) == 0
    with pytest.raises(ValidationError, match="^image: "):
        count_shapes(np.zeros((64, 64)))


def test_size_metric_reads_enlarged_images_at_the_worlds_size():
    one = _scene(shape="square", colour="blue", size="large", position="center", background="white")
    spec = GenerationSpec("a large blue square in the center on a white background")
    big = np.asarray(world.render(world.sample_scene(np.random.default_rng(0), shape="square", colour="blue", size="large",
                                                     position="center", background="white")).resize((128, 128)))
    for image, shapes in ((one, 1), (big, 1), (np.concatenate([one, one], axis=1), 2)):
        found = size_metric(image, spec)
        assert found["shapes"] == shapes and found["duplicated"] == (shapes > 1)
    assert size_metric(big, spec)["all_ok"] and size_metric(one, spec)["all_ok"]


def test_measure_sizes_direct_and_hires(pipe):
    specs = [GenerationSpec(PROMPT, seed=s, steps=2) for s in (1, 2)]
    table = measure_sizes(pipe, specs, [64, 96, (96, 64)], size_metric, hires={"strength": 0.5, "steps": 1})
    assert list(zip(table["method"], table["width"], table["height"]))[::2] == [
        ("direct", 64, 64), ("direct", 96, 96), ("direct", 96, 64), ("hires", 96, 96)]
    assert {"shapes", "duplicated", "all_ok", "seconds", "scale"} <= set(table.columns)
    summary = summarize(table)
    assert len(summary) == 4 and (summary["images"] == 2).all()
    assert {"shapes", "duplicated", "all_ok"} <= set(summary.columns) and "found_shape" not in summary.columns
    assert summary["strength"].isna().sum() == 3 and summary["strength"].iloc[3] == 0.5
    more = measure_sizes(pipe, specs[:1], [64, 96], size_metric, hires={"strength": 0.3, "steps": 1}, direct=False)
    assert list(zip(more["method"], more["width"], more["strength"])) == [("hires", 96, 0.3)]


def test_measure_sizes_refuses_in_one_line(pipe):
    specs = [GenerationSpec(PROMPT, seed=1)]
    with pytest.raises(ValidationError, match=r"^sizes: \['64'\] is not valid; valid: one or more sizes"):
        measure_sizes(pipe, specs, ["64"], size_metric)
    with pytest.raises(ValidationError, match=r"^hires: \{'scale': 2\} is not valid; valid: a dict with strength, upscaler, steps or None$"):
        measure_sizes(pipe, specs, [64], size_metric, hires={"scale": 2})
    with pytest.raises(ValidationError, match=r"^direct: False is not valid; valid: True, or a hires setting with a square size above the native 64$"):
        measure_sizes(pipe, specs, [64], size_metric, hires={"strength": 0.5}, direct=False)


def test_cli_hires_writes_pngs_with_the_hires_parameters(tiny_pipeline_dir, tmp_path, capsys):
    from sdlab.cli import main
    from sdlab.metadata import read_parameters

    argv = ["hires", PROMPT, "--model", str(tiny_pipeline_dir), "--device", "cpu", "--seed", "5", "--steps", "2",
            "--scale", "1.5", "--strength", "0.5", "--hires-steps", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    (path,) = capsys.readouterr().out.split()
    spec = read_parameters(path)
    assert hires_settings(spec) == {"scale": 1.5, "strength": 0.5, "upscaler": "lanczos", "steps": 1}
    from PIL import Image

    assert Image.open(path).size == (96, 96)
    assert main([*argv[:-2], "--upscaler", "ESRGAN", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: upscaler: 'ESRGAN' is not valid; valid: one of lanczos, latent"


def test_hires_panel_shows_first_pass_direct_and_fixed(pipe):
    from sdlab.widgets.hires import HiresPanel

    panel = HiresPanel(pipe, PROMPT, seed=2, measure=size_metric)
    panel.scale.value, panel.strength.value, panel.steps.value = 1.5, 0.5, 1
    panel.start(background=False)
    assert panel.last_error is None, panel.status.value
    fixed, direct = panel.result
    assert fixed.images[0].size == direct.images[0].size == (96, 96)
    labels = [view.children[0].value for view in panel.views]
    assert labels[0].startswith("<b>first pass</b> 64x64") and "shapes: " in labels[2]
    panel.seed.value = -5  # one line in the status, no traceback
    panel.start(background=False)
    assert panel.last_error.startswith("seed: -5")
