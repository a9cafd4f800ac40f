"""Precision: bf16 and fp16 against fp32 on every architecture family, SDXL's fp16 VAE trap, and the
measured comparison (sdlab.precision) on the shapes world.

Tolerances, measured on the tiny random pipelines (4 Euler steps, 64 x 64, seed 1, uint8 levels):
bf16 differs from fp32 by a mean of 0.58 (sd2-inpaint) to 1.01 (sd3), at most 10 levels (sd3);
fp16 by a mean of 0.05 to 0.14, at most 2 levels. The tests allow twice that.
"""
from __future__ import annotations

import copy
import types

import numpy as np
import pytest
import torch

from sdlab.errors import ModelNotFoundError, ValidationError
from sdlab.generate import generate
from sdlab.models import load_pipeline
from sdlab.precision import decoding_vae, measure_dtypes, summarize, vae_needs_upcast
from sdlab.spec import GenerationSpec

FAMILIES = ("sd1", "sd2", "sd2-inpaint", "sdxl", "sd3")
TOLERANCE = {"bf16": (2.0, 20), "fp16": (0.3, 4)}  # (mean, max) absolute difference in uint8 levels
SPEC = GenerationSpec("a red circle", seed=1, steps=4, sampler="Euler")


@pytest.fixture(scope="module")
def fp32_images(family_dir):
    cache: dict[str, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        if name not in cache:
            cache[name] = generate(load_pipeline(family_dir(name), device="cpu", dtype="fp32"), SPEC).arrays().astype(int)
        return cache[name]

    return get


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("name", FAMILIES)
def test_low_precision_is_close_to_fp32_on_every_family(family_dir, fp32_images, name, dtype):
    pipe = load_pipeline(family_dir(name), device="cpu", dtype=dtype)
    image = generate(pipe, SPEC).arrays().astype(int)
    diff = np.abs(image - fp32_images(name))
    mean, largest = TOLERANCE[dtype]
    assert np.ptp(image) > 10, "a blank image: NaN decoded to one colour"
    assert diff.mean() < mean and diff.max() <= largest, (diff.mean(), diff.max())


def test_sdxl_fp16_decodes_in_fp32_without_casting_the_users_vae(family_dir, fp32_images):
    pipe = load_pipeline(family_dir("sdxl"), device="cpu", dtype="fp16")
    assert pipe.vae.config.force_upcast and vae_needs_upcast(pipe)
    image = generate(pipe, SPEC).arrays().astype(int)  # diffusers' SDXL pipeline upcasts for the call
    assert pipe.vae.dtype == torch.float16  # ...and puts it back
    assert np.abs(image - fp32_images("sdxl")).max() <= TOLERANCE["fp16"][1]
    vae32 = decoding_vae(pipe)
    assert vae32 is not pipe.vae and vae32.dtype == torch.float32 and pipe.vae.dtype == torch.float16
    assert decoding_vae(pipe) is vae32  # made once


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_no_upcast_outside_fp16(family_dir, dtype):
    pipe = load_pipeline(family_dir("sdxl"), device="cpu", dtype=dtype)
    assert not vae_needs_upcast(pipe) and decoding_vae(pipe) is pipe.vae


def test_fp16_overflow_is_what_the_upcast_avoids(family_dir):
    """A VAE whose activations pass fp16's 65,504 decodes to NaN in fp16; decoding_vae's fp32 copy does not."""
    pipe = load_pipeline(family_dir("sdxl"), device="cpu", dtype="fp32")
    vae = copy.deepcopy(pipe.vae)
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(1e5)  # weights still fit fp16; activations do not, as in SDXL's decoder
    half = types.SimpleNamespace(vae=vae.to(torch.float16))
    assert torch.isfinite(half.vae.decoder.conv_in.weight).all()
    z = 30 * torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))  # unscaled latents (/ 0.13)
    with torch.no_grad():
        assert not torch.isfinite(half.vae.decode(z.half()).sample).all()
        fixed = decoding_vae(half)
        assert torch.isfinite(fixed.decode(z).sample).all()
    assert half.vae.dtype == torch.float16


def test_a_vae_fixed_for_fp16_is_loaded_in_place_and_not_upcast(family_dir, tmp_path):
    """load_pipeline(vae=DIR): the given VAE (here one whose config says it is safe in fp16) replaces the checkpoint's."""
    base = load_pipeline(family_dir("sdxl"), device="cpu", dtype="fp32")
    fixed = type(base.vae).from_config({**base.vae.config, "force_upcast": False})
    fixed.load_state_dict(base.vae.state_dict())
    fixed.save_pretrained(tmp_path / "vae-fp16-fix")
    pipe = load_pipeline(family_dir("sdxl"), device="cpu", dtype="fp16", vae=tmp_path / "vae-fp16-fix")
    assert pipe.vae.dtype == torch.float16 and not pipe.vae.config.force_upcast
    assert not vae_needs_upcast(pipe) and decoding_vae(pipe) is pipe.vae
    from sdlab.models import model_info

    assert model_info(pipe).extra["vae"] == str(tmp_path / "vae-fp16-fix")
    assert np.ptp(generate(pipe, SPEC).arrays()) > 10
    # a pipeline directory's vae/ is found too
    assert load_pipeline(family_dir("sd1"), device="cpu", vae=family_dir("sdxl")).vae.config.force_upcast


def test_a_missing_vae_is_one_line(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"^vae: .* is not a VAE directory"):
        load_pipeline("shapes-world", device="cpu", vae=tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"^vae: 'nobody/no-such-vae' is not in the local Hugging Face cache"):
        load_pipeline("shapes-world", device="cpu", vae="nobody/no-such-vae")


def _measure(image, spec):
    return {"bright": float(image.mean()) > 100, "red_mean": float(image[..., 0].mean()), "note": "text is left out"}


def test_measure_dtypes_in_process(tiny_pipeline_dir):
    specs = [GenerationSpec("a red circle", seed=s, steps=2) for s in (1, 2)]
    table = measure_dtypes(tiny_pipeline_dir, specs, ("fp32", "bf16"), measure=_measure, isolate=False)
    assert list(table["dtype"]) == ["fp32", "fp32", "bf16", "bf16"] and list(table["seed"]) == [1, 2, 1, 2]
    reference = table[table["dtype"] == "fp32"]
    assert (reference["mean_abs_diff"] == 0).all() and (reference["max_abs_diff"] == 0).all()
    assert (table["seconds"] > 0).all() and not table["blank"].any()
    assert table["peak_rss_mb"].isna().all()  # one shared process: no per-dtype peak
    summary = summarize(table)
    assert list(summary["dtype"]) == ["fp32", "bf16"] and list(summary["images"]) == [2, 2]
    assert {"bright", "red_mean"} <= set(summary.columns) and "note" not in summary.columns
    assert summary.loc[1, "mean_abs_diff"] < TOLERANCE["bf16"][0] * 2


def test_measure_dtypes_isolated_reports_each_process_peak(tiny_pipeline_dir):
    table = measure_dtypes(tiny_pipeline_dir, [GenerationSpec("a red circle", seed=1, steps=1)], ("fp32",))
    row = table.iloc[0]
    assert 0 < row["rss_before_load_mb"] < row["peak_rss_mb"]


@pytest.mark.parametrize("kwargs, message", [
    ({"dtypes": ("fp32", "fp8")}, r"^dtypes: \('fp32', 'fp8'\) is not valid; valid: one or more distinct names from fp32, bf16, fp16$"),
    ({"dtypes": ("bf16",)}, r"^reference: 'fp32' is not valid; valid: one of the measured dtypes \(bf16\)$"),
    ({"specs": []}, r"^specs: \[\] is not valid; valid: one or more text-to-image GenerationSpecs$"),
])
def test_measure_dtypes_refuses_in_one_line(kwargs, message):
    args = {"specs": [GenerationSpec("a red circle", seed=1)], **kwargs}
    with pytest.raises(ValidationError, match=message):
        measure_dtypes("shapes-world", **args)


@pytest.mark.slow
def test_shipped_model_bf16_keeps_what_the_checker_reads():
    """The shipped shapes world, fp32 against bf16 on four evaluation prompts at 10 steps."""
    from sdlab.mini import world
    from sdlab.mini.metrics import checker_metric

    prompts = world.evaluation_prompts(4)
    specs = [GenerationSpec(row.prompt, seed=int(row.seed), steps=10) for row in prompts.itertuples()]
    summary = summarize(measure_dtypes("shapes-world", specs, ("fp32", "bf16"), measure=checker_metric, isolate=False))
    bf16 = summary.set_index("dtype").loc["bf16"]
    assert bf16["mean_abs_diff"] < 2.0 and bf16["blank"] == 0
    assert abs(bf16["all_ok"] - summary.set_index("dtype").loc["fp32", "all_ok"]) <= 0.25


def test_cli_precision(tiny_pipeline_dir, tmp_path, capsys):
    from sdlab.cli import main

    argv = ["precision", "--model", str(tiny_pipeline_dir), "--prompt", "a red circle", "-n", "1", "--steps", "1",
            "--in-process", "--csv", str(tmp_path / "t.csv")]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["dtype", "images", "seconds_per_image"] and [line.split()[0] for line in out[1:]] == ["fp32", "bf16"]
    assert (tmp_path / "t.csv").exists()
    assert main(["precision", "--model", str(tiny_pipeline_dir)]) == 2
    assert "error: --prompt: None is not valid for" in capsys.readouterr().err
    assert main(["precision", "--dtypes", "fp32,fp64", "--prompt", "x"]) == 2
    assert capsys.readouterr().err.startswith("error: dtypes: ('fp32', 'fp64') is not valid")
