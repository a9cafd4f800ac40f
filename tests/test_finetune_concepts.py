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
    _, ruby = concepts.make_set("ruby", 20, split="held_out")
    assert set(ruby["colour"]) == {"red"} and len(set(ruby["shape"])) > 1 and not set(ruby["position"]) & set(concepts.TRAIN_POSITIONS)
    assert all(t.startswith("a ") and f"ruby {shape}" in t and "red" not in t for t, shape in zip(ruby["TEXT"], ruby["shape"]))
    assert all(" red " in p and "ruby" not in p for p in concepts.class_prompts("ruby", 5))
    prompts = concepts.evaluation_prompts("outlined", trigger="", n=8)
    assert all("outlined" not in p for p in prompts["prompt"]) and set(prompts["style"]) == {"outlined"}


def test_degrade_keeps_size_and_loses_detail():
    images, _ = concepts.make_set("star", 4)
    low = concepts.degrade(images, 16)
    assert low.shape == images.shape and low.dtype == np.uint8
    assert not np.array_equal(low, images)


def test_unknown_concept_is_one_line():
    with pytest.raises(ValidationError, match=r"^concept: 'moon' is not valid; valid: one of star, sun, ruby, outlined$"):
        concepts.make_set("moon")


def test_a_fixed_colour_is_part_of_the_concept():
    images, table = concepts.make_set("ruby", 6, seed=1)
    wrong = concepts.make_set("ruby", 6, seed=1)[0][:, :, :, ::-1].copy()  # red drawn as blue
    assert concepts.score(images, table.assign(concept="ruby"))["concept_ok"].all()
    scored = concepts.score(wrong, table.assign(concept="ruby"))
    assert scored["shape_ok"].all() and not scored["concept_ok"].any()  # the right shapes, the wrong colour
