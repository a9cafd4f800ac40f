"""Shapes-world concepts for fine-tuning: the checker reads the star and the style on ground truth, splits hold out what they say."""
import numpy as np
import pytest

from sdlab.errors import ValidationError
from sdlab.mini import checker, concepts, world


@pytest.mark.parametrize("name", sorted(concepts.CONCEPTS))
def test_checker_reads_each_concept_on_ground_truth(name):
    for split in ("train", "held_out"):
        images, table = concepts.make_set(name, 40, seed=3, split=split)
        scored = concepts.score(images, table.assign(concept=name))
        assert scored["concept_ok"].mean() >= 0.97, (name, split)
        assert scored["all_ok"].mean() >= 0.95, (name, split)


def test_base_world_reads_the_same_and_filled():
    images, meta = world.make_dataset(40, seed=11)
    for image in images:
        old, new = checker.check(image), concepts.check(image)
        assert {k: new[k] for k in old} == old
        assert new["style"] == "filled"


def test_splits_hold_out_colours_and_positions():
    _, train = concepts.make_set("star", 60, split="train")
    _, held = concepts.make_set("star", 60, split="held_out")
    assert set(train["colour"]) <= set(concepts.TRAIN_COLOURS) and set(train["position"]) <= set(concepts.TRAIN_POSITIONS)
    assert not set(held["colour"]) & set(concepts.TRAIN_COLOURS) and not set(held["position"]) & set(concepts.TRAIN_POSITIONS)
    assert all(" star" in t and "cross" not in t for t in train["TEXT"])
    _, sun = concepts.make_set("sun", 10, trigger="sun circle")
    assert set(sun["colour"]) == {"yellow"} and all(t.startswith("a ") and "sun circle" in t and "yellow" not in t for t in sun["TEXT"])
    prompts = concepts.evaluation_prompts("outlined", trigger="", n=8)
    assert all("outlined" not in p for p in prompts["prompt"]) and set(prompts["style"]) == {"outlined"}


def test_degrade_keeps_size_and_loses_detail():
    images, _ = concepts.make_set("star", 4)
    low = concepts.degrade(images, 16)
    assert low.shape == images.shape and low.dtype == np.uint8
    assert not np.array_equal(low, images)


def test_unknown_concept_is_one_line():
    with pytest.raises(ValidationError, match=r"^concept: 'moon' is not valid; valid: one of star, sun, outlined$"):
        concepts.make_set("moon")
