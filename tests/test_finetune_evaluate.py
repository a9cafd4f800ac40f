"""The fine-tuning lab's measures: the paired drop a fine-tune costs and its standard error."""
import numpy as np
import pytest

from sdlab.errors import ValidationError
from sdlab.finetune.evaluate import paired_drop


def test_paired_drop_counts_the_prompts_that_changed():
    rng = np.random.default_rng(0)
    before = rng.random(400) < 0.9
    after = before.copy()
    right, wrong = np.flatnonzero(before), np.flatnonzero(~before)
    after[right[:30]] = False  # 30 lost
    after[wrong[:6]] = True  # 6 gained
    got = paired_drop(before, after)
    d = before.astype(float) - after.astype(float)
    assert (got["lost"], got["gained"], got["n"]) == (30, 6, 400)
    assert got["drop"] == pytest.approx(24 / 400) == pytest.approx(d.mean())
    assert got["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(400))
    # unpaired, the same two accuracies would carry a larger error than the changed prompts allow
    unpaired = np.sqrt(before.mean() * (1 - before.mean()) / 400 + after.mean() * (1 - after.mean()) / 400)
    assert got["se"] < unpaired


def test_an_unchanged_model_drops_nothing_with_no_error():
    same = np.array([True, False, True, True])
    assert paired_drop(same, same) == {"drop": 0.0, "se": 0.0, "lost": 0, "gained": 0, "n": 4}


def test_results_of_other_prompts_are_refused_in_one_line():
    with pytest.raises(ValidationError, match=r"^after: .* one per prompt of before \(3\)$"):
        paired_drop([True, False, True], [True, False])
