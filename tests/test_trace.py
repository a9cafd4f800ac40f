"""The denoising explorer: the traced image is generate's image; x0, previews and attention are consistent."""
import numpy as np
import pytest
import torch

from sdlab.errors import ValidationError
from sdlab.generate import generate
from sdlab.models import load_pipeline
from sdlab.spec import GenerationSpec
from sdlab.trace import latent_preview, save_trace, schedules, trace


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return load_pipeline(str(tiny_pipeline_dir), device="cpu")


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "Heun", "DDIM", "DPM++ 2M", "UniPC"])
def test_traced_image_is_generates_image(pipe, sampler):
    spec = GenerationSpec("a red circle", seed=4, steps=6, sampler=sampler, guidance=3.0)
    tr = trace(pipe, spec)
    assert np.array_equal(np.asarray(tr.image), np.asarray(generate(pipe, spec).images[0]))
    assert len(tr.steps) == 6 and [s.index for s in tr.steps] == list(range(6))
    s = tr.steps[0]
    assert s.x_t.shape == s.eps.shape == s.x0.shape == (4, 16, 16)
    assert torch.allclose(s.eps, s.eps_uncond + 3.0 * (s.eps_cond - s.eps_uncond), atol=1e-5)
    sigmas = [st.sigma for st in tr.steps]
    assert all(a > b for a, b in zip(sigmas, sigmas[1:]))  # noise falls step by step


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M"])
def test_x0_at_the_last_step_is_the_output(pipe, sampler):
    tr = trace(pipe, GenerationSpec("a blue square", seed=2, steps=8, sampler=sampler))
    decoded = np.asarray(latent_preview(tr.steps[-1].x0, None, pipe), dtype=np.int16)
    assert np.abs(decoded - np.asarray(tr.image, dtype=np.int16)).max() <= 2


def test_attention_maps_sum_to_one_over_tokens(pipe):
    tr = trace(pipe, GenerationSpec("a red circle", seed=1, steps=3), attention=True)
    maps = tr.steps[1].attention
    assert maps.shape == (77, 16, 16)
    assert torch.allclose(maps.sum(dim=0), torch.ones(16, 16), atol=1e-4)
    assert tr.tokens[:4] == ["<|startoftext|>", "a", "red", "circle"]
    plain = np.asarray(generate(pipe, GenerationSpec("a red circle", seed=1, steps=3)).images[0], np.int16)
    assert np.abs(np.asarray(tr.image, np.int16) - plain).max() <= 2  # explicit attention: rounding only


def test_previews_have_the_image_size_and_byte_range(pipe):
    tr = trace(pipe, GenerationSpec("x", seed=0, steps=3))
    linear = tr.preview(0, "x_t", "linear")
    exact = tr.preview(2, "x0", "vae", pipe)
    assert linear.size == exact.size == (64, 64) and linear.mode == "RGB"
    table = tr.table()
    assert list(table.columns) == ["step", "timestep", "sigma", "log_snr", "eps_norm", "cfg_delta_norm", "x0_change"]
    assert (table["cfg_delta_norm"] >= 0).all() and np.isnan(table["x0_change"][0])


def test_save_trace_and_schedules(pipe, tmp_path):
    paths = save_trace(trace(pipe, GenerationSpec("x", seed=0, steps=4), attention=True), tmp_path, pipe)
    assert all(p.exists() for p in paths.values()) and {"animation", "table", "attention"} <= set(paths)
    table = schedules(pipe, ["Euler", "DDIM"], steps=10)
    assert set(table["sampler"]) == {"Euler", "DDIM"} and len(table) == 20
    euler = table[table.sampler == "Euler"]
    assert euler["alpha_bar"].is_monotonic_increasing


def test_only_text_to_image_is_traced(pipe):
    with pytest.raises(ValidationError, match="only text-to-image"):
        trace(pipe, GenerationSpec("x", init_image=np.zeros((64, 64, 3), np.uint8)))


def test_denoise_explorer_scrubs_steps(pipe):
    from sdlab.widgets.denoise import DenoiseExplorer

    panel = DenoiseExplorer(pipe, prompt="a red circle")
    panel.cfg.value = 3.0
    panel.start(background=False)
    assert panel.last_error is None and panel.step.max == len(panel.trace.steps) - 1
    first = panel.views["x0"].value
    panel.step.value = panel.step.max
    assert panel.views["x0"].value != first and "step" in panel.caption.value
    assert [label for label, _ in panel.token.options] == ["a", "red", "circle"]
