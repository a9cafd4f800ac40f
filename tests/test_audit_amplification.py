"""Bias amplification arithmetic, with a stand-in generator and checker whose answers are known.

Captions are read by the shapes world's parser, the world the command line passes in.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sdlab.audit.amplification import amplification, generate_checked, run_amplification, training_skew
from sdlab.cli.audit import shapes_world
from sdlab.errors import ValidationError
from sdlab.mini import world

COLOURS = ["yellow", "red", "blue"]


def _training() -> pd.DataFrame:
    """20 triangles: 10 yellow (8 captioned without colour), 10 red (2 without colour); 5 circles."""
    rows = []
    for i in range(10):
        rows.append({"shape": "triangle", "colour": "yellow", "TEXT": "a triangle" if i < 8 else "a yellow triangle"})
    for i in range(10):
        rows.append({"shape": "triangle", "colour": "red", "TEXT": "a small triangle on a white background" if i < 2 else "a red triangle"})
    rows += [{"shape": "circle", "colour": "yellow", "TEXT": "a circle"}] * 5
    frame = pd.DataFrame(rows)
    for a in ("size", "position", "background"):
        frame[a] = "x"
    return frame


def _stand_in(yellow_every: dict[float, int]):
    """Images whose pixel (0,0) encodes the colour: yellow for every k-th seed at guidance g."""

    def generate(prompt: str, n: int, guidance: float, seed: int) -> np.ndarray:
        assert prompt == "a triangle"
        images = np.zeros((n, 64, 64, 3), dtype=np.uint8)
        for i in range(n):
            images[i, 0, 0, 0] = 0 if (seed + i) % yellow_every[guidance] == 0 else 1
        images[-1, 0, 0, 1] = 255  # the checker finds no colour in the last image of each batch
        return images

    def check(image: np.ndarray) -> dict:
        colour = None if image[0, 0, 1] == 255 else COLOURS[int(image[0, 0, 0])]
        return {"shape": "triangle", "colour": colour, "size": None, "position": None, "background": None}

    return generate, check


def test_training_skew_counts_underspecified_captions():
    t = training_skew(_training(), {"shape": "triangle"}, "colour", "yellow", world.parse_caption)
    assert t == {"train_rows_all": 20, "train_hits_all": 10, "train_rows_underspecified": 10, "train_hits_underspecified": 8}


def test_amplification_arithmetic_on_known_inputs():
    generate, check = _stand_in({1.0: 2, 7.5: 1})  # half yellow at g=1, all yellow at g=7.5
    gen = generate_checked(generate, check, "a triangle", n=40, guidance_scales=[1.0, 7.5], batch=10)
    assert len(gen) == 80 and gen["colour"].isna().sum() == 8
    r = amplification(gen, _training(), n_boot=500, parse=world.parse_caption)
    t = r.table.set_index("guidance")
    # g=1: seeds 0..39 minus 9,19,29,39 unreadable -> 36 checked; even seeds yellow: 20
    assert t.loc[1.0, "checked"] == 36 and t.loc[1.0, "hits"] == 20
    assert t.loc[1.0, "generated_share"] == pytest.approx(20 / 36)
    assert t.loc[7.5, "generated_share"] == 1.0
    assert t.loc[1.0, "train_share_all"] == 0.5 and t.loc[1.0, "train_share_underspecified"] == 0.8
    assert t.loc[7.5, "diff_vs_underspecified"] == pytest.approx(0.2)
    assert t.loc[1.0, "verdict_vs_all"] == "keeps"
    assert t.loc[7.5, "verdict_vs_all"] == "amplifies"
    assert t.loc[1.0, "ci_low"] < 20 / 36 < t.loc[1.0, "ci_high"]
    assert r.stats["prompt"] == "a triangle" and r.stats["value"] == "yellow"
    dist = r.tables["distribution"]
    assert set(dist["source"]) == {"generated, guidance 1", "generated, guidance 7.5", "training, all matching images"}
    assert set(r.figures()) == {"amplification"}


def test_reduction_is_detected():
    generate, check = _stand_in({3.0: 1000})  # only seed 0 yellow
    gen = generate_checked(generate, check, "a triangle", n=60, guidance_scales=[3.0], batch=20)
    r = amplification(gen, _training(), n_boot=500, parse=world.parse_caption)
    assert r.table["verdict_vs_underspecified"].iloc[0] == "reduces"


def test_run_amplification_with_stand_ins_and_bad_specs():
    generate, check = _stand_in({2.0: 2})
    r = run_amplification(shapes_world(), generate=generate, check=check, training=_training(), n=8, guidance_scales=[2.0])
    assert r.table["images"].iloc[0] == 8
    with pytest.raises(ValidationError, match="attribute: 'shape'"):
        run_amplification(shapes_world(), generate=generate, check=check, training=_training(), attribute="shape")
    with pytest.raises(ValidationError, match="attribute: 'flavour'"):
        run_amplification(shapes_world(), generate=generate, check=check, training=_training(), attribute="flavour")


def test_shapes_world_training_skew_matches_its_design():
    _, meta = world.make_dataset(1500, seed=3)
    t = training_skew(meta, {"shape": "triangle"}, "colour", "yellow", world.parse_caption)
    assert 0.4 < t["train_hits_all"] / t["train_rows_all"] < 0.6  # triangles are yellow half the time
    # yellow triangles drop their colour 70% of the time, others 20%: 0.35 / (0.35 + 0.10) ~ 0.78
    assert 0.68 < t["train_hits_underspecified"] / t["train_rows_underspecified"] < 0.88
