"""generate(): seeds, batches, samplers, img2img/inpaint/outpaint mechanics, saved metadata.

These run on a few-step pipeline trained in-process (format real, weights
meaningless); what the trained shapes world draws is tested in test_shipped_model.py.
"""
import numpy as np
import pytest
from PIL import Image

from sdlab.errors import Cancelled, ValidationError
from sdlab.generate import generate, generate_many, outpaint_canvas
from sdlab.metadata import read_parameters
from sdlab.mini import world
from sdlab.models import load_pipeline, model_info
from sdlab.samplers import SAMPLERS, sampler_names
from sdlab.spec import GenerationSpec


@pytest.fixture(scope="module")
def pipe(tiny_pipeline_dir):
    return load_pipeline(str(tiny_pipeline_dir), device="cpu")


def _px(image):
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_same_seed_same_image_other_seed_other_image(pipe):
    spec = GenerationSpec("a red circle", seed=5, steps=4)
    a, b = generate(pipe, spec).images[0], generate(pipe, spec).images[0]
    assert np.array_equal(_px(a), _px(b))
    c = generate(pipe, spec.replace(seed=6)).images[0]
    assert not np.array_equal(_px(a), _px(c))


def test_image_k_of_a_batch_equals_the_single_image_with_seed_plus_k(pipe):
    batch = generate(pipe, GenerationSpec("a blue square", seed=10, steps=4, batch_size=3))
    assert [s.seed for s in batch.specs] == [10, 11, 12]
    for k in range(3):
        single = generate(pipe, GenerationSpec("a blue square", seed=10 + k, steps=4)).images[0]
        assert np.abs(_px(batch.images[k]) - _px(single)).max() <= 1


def test_generate_many_matches_generate(pipe):
    specs = [GenerationSpec("a red circle", seed=1, steps=3, guidance=2.0), GenerationSpec("a blue cross", seed=2, steps=3, guidance=2.0)]
    many = generate_many(pipe, specs)
    for (image, spec), original in zip(many, specs):
        assert spec.seed == original.seed and spec.prompt == original.prompt
        assert np.abs(_px(image) - _px(generate(pipe, original).images[0])).max() <= 1


@pytest.mark.parametrize("sampler", sampler_names())
def test_every_sampler_runs(pipe, sampler):
    scheduler, config = pipe.scheduler, dict(pipe.scheduler.config)
    result = generate(pipe, GenerationSpec("a circle", seed=0, steps=4, sampler=sampler))
    assert result.images[0].size == (64, 64) and result.specs[0].sampler == sampler
    assert result.scheduler == SAMPLERS[sampler].scheduler
    assert pipe.scheduler is scheduler and dict(pipe.scheduler.config) == config  # the user's pipeline is left as it was


def test_size_is_checked_against_the_model(pipe):
    with pytest.raises(ValidationError, match="too small"):
        generate(pipe, GenerationSpec("x", width=8, height=64))


def test_defaults_come_from_the_model(pipe):
    spec = generate(pipe, GenerationSpec("x", seed=1)).specs[0]
    d = model_info(pipe).defaults
    assert (spec.steps, spec.guidance, spec.sampler, spec.width, spec.height) == (d["steps"], d["guidance"], d["sampler"], 64, 64)
    assert spec.model == "shapes-world" and spec.model_hash == model_info(pipe).hash


def test_img2img_strength_zero_keeps_and_one_replaces(pipe):
    # the shipped model: the module's few-step pipeline has a VAE that carries no image back (~60 levels off at any strength)
    shipped = load_pipeline("shapes-world", device="cpu")
    init = world.render(world.sample_scene(np.random.default_rng(0), shape="triangle", colour="yellow", size="large", background="teal"))
    low = generate(shipped, GenerationSpec("x", seed=1, steps=10, init_image=init, strength=0.1)).images[0]
    high = generate(shipped, GenerationSpec("x", seed=1, steps=10, init_image=init, strength=1.0)).images[0]
    d_low, d_high = np.abs(_px(low) - _px(init)).mean(), np.abs(_px(high) - _px(init)).mean()
    assert d_low < 12 and 3 * d_low < d_high, (d_low, d_high)
    zero = generate(pipe, GenerationSpec("x", seed=1, steps=10, init_image=init, strength=0.0)).images[0]
    assert np.array_equal(_px(zero), _px(init))  # no step to run: unchanged, as in A1111


def test_inpainting_keeps_every_pixel_outside_the_mask(pipe):
    init = Image.fromarray(np.full((64, 64, 3), (40, 160, 90), np.uint8))
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    result = generate(pipe, GenerationSpec("x", seed=3, steps=6, init_image=init, mask=Image.fromarray(mask), mask_blur=2))
    out = _px(result.images[0])
    outside = np.ones((64, 64), bool)
    outside[16 - 7 : 48 + 7, 16 - 7 : 48 + 7] = False  # beyond the blurred seam (Gaussian tails reach ~3 x blur)
    assert np.array_equal(out[outside], _px(init)[outside])
    with pytest.raises(ValidationError, match="mask: size 32x32 must equal the image size 64x64"):
        generate(pipe, GenerationSpec("x", init_image=init, mask=Image.new("L", (32, 32))))


def test_outpainting_extends_the_canvas_and_keeps_the_middle(pipe):
    init = Image.fromarray(np.full((64, 64, 3), 200, np.uint8))
    result = generate(pipe, GenerationSpec("x", seed=1, steps=4, init_image=init, outpaint=(16, 0, 16, 0), mask_blur=4))
    out = _px(result.images[0])
    assert out.shape == (64, 96, 3) and result.specs[0].width == 96
    # the seam: the mask starts `blur` px inside the old edge and its Gaussian tail reaches 3 x blur further
    assert np.array_equal(out[:, 32:64], _px(init)[:, 16:48])
    assert np.abs(out[:, :8] - 200).mean() > 0 or np.abs(out[:, -8:] - 200).mean() > 0  # new area was painted
    canvas, mask = outpaint_canvas(init, (8, 8, 0, 0), 2)
    assert canvas.size == (72, 72) and np.asarray(mask)[0, 0] == 255 and np.asarray(mask)[40, 40] == 0


def test_saved_png_carries_the_spec_and_reproduces(pipe, tmp_path):
    result = generate(pipe, GenerationSpec("a (red:1.2) circle", negative_prompt="blue", seed=9, steps=3, sampler="Euler a"))
    path = result.save(tmp_path)[0]
    spec = read_parameters(path)
    assert spec == result.specs[0]
    again = generate(pipe, spec).images[0]
    assert np.array_equal(_px(again), _px(Image.open(path)))


def test_callback_can_cancel(pipe):
    seen = []

    def callback(done, total):
        seen.append((done, total))
        if done == 2:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        generate(pipe, GenerationSpec("x", steps=10), callback=callback)
    assert seen == [(1, 10), (2, 10)]


def test_panel_drives_generation_without_a_browser(pipe):
    from sdlab.widgets.generation import GenerationPanel

    panel = GenerationPanel(pipe)
    panel.steps.value, panel.batch.value, panel.seed.value = 3, 2, 7
    panel.generate(background=False)
    assert panel.last_error is None and len(panel.gallery.children) == 2
    assert [s.seed for s in panel.results[-1].specs] == [7, 8]
    panel.gallery.children[0].children[2].click()  # "Copy A1111 text"
    assert "Seed: 7" in panel.clipboard.value
    panel.width.value = 70
    panel.generate(background=False)
    assert panel.last_error.startswith("width: 70 is not valid; valid: a multiple of")
    panel.width.value = panel.height.value = 8192  # typed into the size boxes: refused with the estimate
    panel.generate(background=False)
    assert panel.last_error.startswith("cost: '8192x8192, 2 images, 3 steps' is not valid") and "estimated" in panel.last_error
    panel.width.value = panel.height.value = 64
    panel.mode.selected_index = 1
    panel.generate(background=False)
    assert "init image" in panel.last_error


def test_panel_cancel_stops_a_background_run(pipe):
    from sdlab.widgets.generation import GenerationPanel

    panel = GenerationPanel(pipe)
    panel.steps.value = 150
    panel.cancel()  # a press before the run is forgotten: each run starts fresh
    panel.generate(background=True)
    panel.cancel()
    panel.wait(60)
    assert not panel.busy and panel.status.value == "cancelled" and not panel.results
