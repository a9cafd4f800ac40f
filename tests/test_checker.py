"""The attribute checker on the generator's ground truth (target: >= 99% per attribute)."""
import numpy as np
import pytest

from sdlab.mini import checker, world


@pytest.fixture(scope="module")
def ground_truth():
    return world.make_dataset(600, seed=11)


def test_checker_reads_ground_truth(ground_truth):
    images, meta = ground_truth
    scored = checker.score(images, meta)
    for attribute in checker.ATTRIBUTES:
        assert scored[f"{attribute}_ok"].mean() >= 0.99, attribute


def test_checker_survives_mild_noise(ground_truth):
    images, meta = ground_truth
    rng = np.random.default_rng(0)
    noisy = np.clip(images.astype(int) + rng.integers(-8, 9, images.shape), 0, 255).astype(np.uint8)
    scored = checker.score(noisy[:200], meta.iloc[:200])
    assert scored["all_ok"].mean() >= 0.97


def test_empty_image_has_only_a_background():
    flat = np.full((64, 64, 3), 128, np.uint8)
    assert checker.check(flat) == {"shape": None, "colour": None, "size": None, "position": None, "background": "gray"}


def test_unscored_attributes_are_skipped():
    rng = np.random.default_rng(1)
    scene = world.sample_scene(rng, shape="square", colour="blue")
    import pandas as pd

    scored = checker.score([np.asarray(world.render(scene))], pd.DataFrame([{"shape": "square", "colour": None}]))
    assert bool(scored.loc[0, "shape_ok"]) is True
    assert "colour_ok" not in scored.columns  # left out of the prompt: not scored
    assert bool(scored.loc[0, "all_ok"]) is True


def test_a_non_rgb_image_is_refused_in_one_line():
    from sdlab.errors import ValidationError

    with pytest.raises(ValidationError, match=r"image: an array of shape \(8, 8\) is not valid; valid: an H x W x 3 RGB image"):
        checker.check(np.zeros((8, 8), np.uint8))


def test_checker_metric_scores_what_the_prompt_names():
    from sdlab.mini.metrics import checker_metric
    from sdlab.spec import GenerationSpec

    scene = world.sample_scene(np.random.default_rng(2), shape="circle", colour="red", size="large", position="center", background="white")
    image = np.asarray(world.render(scene))
    row = checker_metric(image, GenerationSpec("a red circle on a white background"))
    assert row["shape_ok"] and row["colour_ok"] and row["background_ok"] and row["all_ok"]
    assert "size_ok" not in row and row["found_size"] == "large"
    assert checker_metric(image, GenerationSpec("a blue circle"))["all_ok"] is False
    assert checker_metric(image, GenerationSpec("something else"))["all_ok"] is None


def test_checker_metric_judges_the_concepts_trigger_words_on_rendered_stars_and_outlines():
    """A sweep of a star LoRA (``a large red star <lora:star:W>``) is judged on the star; the world's prompts as before."""
    from sdlab.mini import concepts
    from sdlab.mini.metrics import checker_metric, wanted
    from sdlab.spec import GenerationSpec

    def drawn(shape: str, colour: str, style: str = "filled", **fixed) -> np.ndarray:
        base = world.sample_scene(np.random.default_rng(5), shape="square", colour=colour, size="large", **fixed)
        return np.asarray(concepts.render(world.Scene(**{**base.__dict__, "shape": shape}), style=style))

    assert wanted("a large red star at the top left <lora:star:0.8>") == ({"shape": "star", "size": "large", "colour": "red", "position": "top left"}, True)
    assert wanted("a red sun") == ({"shape": "circle", "colour": "red"}, True)  # the prompt's own words win
    assert wanted("a starfish <lora:star:1>") == ({}, False)  # neither a longer word nor a tag names the concept
    star, cross = drawn("star", "red", background="white"), drawn("cross", "red", background="white")
    row = checker_metric(star, GenerationSpec("a large red star on a white background <lora:star:1>"))
    assert row["found_shape"] == "star" and row["shape_ok"] and row["all_ok"] and row["found_style"] == "filled"
    row = checker_metric(cross, GenerationSpec("a large red star on a white background <lora:star:1>"))
    assert row["found_shape"] == "cross" and not row["shape_ok"] and row["all_ok"] is False
    plain = checker_metric(cross, GenerationSpec("a large red cross on a white background"))  # the world's own reader
    assert plain["shape_ok"] and plain["found_style"] is None and "style_ok" not in plain
    outlined = drawn("square", "blue", "outlined", background="white")
    assert checker_metric(outlined, GenerationSpec("a large blue outlined square"))["style_ok"]
    assert not checker_metric(drawn("square", "blue", background="white"), GenerationSpec("a large blue outlined square"))["style_ok"]


def test_decision_steps_finds_where_each_reading_settles():
    from types import SimpleNamespace

    from PIL import Image

    from sdlab.mini.metrics import decision_steps

    def scene(colour: str, shape: str) -> Image.Image:
        return world.render(world.sample_scene(np.random.default_rng(0), shape=shape, colour=colour, size="large",
                                               position="center", background="white"))

    previews = [scene("blue", "square"), scene("red", "square"), scene("red", "circle"), scene("red", "circle")]
    trace = SimpleNamespace(steps=[None] * 4, image=previews[-1], preview=lambda i, what, method, pipe: previews[i])
    decided = decision_steps(trace, pipe=None).groupby("attribute")["decided_at"].first()
    assert decided["colour"] == 2 and decided["shape"] == 3 and decided["background"] == 1
