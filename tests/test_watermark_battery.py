"""ROC arithmetic against a hand-worked example; the battery's rows, resume and refusal."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sdlab.errors import StoreError, ValidationError
from sdlab.images import sample_photos
from sdlab.watermark import auc, battery, roc_curve, summarize, tpr_at_fpr
from sdlab.watermark import robustness as battery_lib


def test_battery_name_is_the_function_not_a_module():
    import sdlab.watermark as wm

    assert callable(battery) and battery is wm.battery is battery_lib.battery
    assert battery_lib.__name__ == "sdlab.watermark.robustness"


def test_roc_by_hand():
    clean = [0.1, 0.4, 0.35, 0.8]
    marked = [0.9, 0.8, 0.5, 0.3]
    fpr, tpr, thr = roc_curve(clean, marked)
    # thresholds 0.9, 0.8, 0.5, 0.4, 0.35, 0.3, 0.1 (score >= t is called marked)
    assert list(thr[1:]) == [0.9, 0.8, 0.5, 0.4, 0.35, 0.3, 0.1]
    assert list(fpr) == [0, 0, 0.25, 0.25, 0.5, 0.75, 0.75, 1.0]
    assert list(tpr) == [0, 0.25, 0.5, 0.75, 0.75, 0.75, 1.0, 1.0]
    assert tpr_at_fpr(clean, marked, 0.0) == 0.25  # only 0.9 clears every clean score
    assert tpr_at_fpr(clean, marked, 0.001) == 0.25
    assert tpr_at_fpr(clean, marked, 0.25) == 0.75
    assert tpr_at_fpr(clean, marked, 0.5) == 0.75
    # AUC: pairs (marked > clean) out of 16, ties half: 0.9:4, 0.8:3+0.5, 0.5:3, 0.3:1 -> 11.5/16
    assert auc(clean, marked) == pytest.approx(11.5 / 16)
    with pytest.raises(ValidationError, match=r"negatives: \[\] is not valid; valid: one or more scores"):
        roc_curve([], [1.0])


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    return sample_photos(256, ("astronaut", "rocket", "coffee"))


ARGS = dict(methods=["dwtDct", "dwtDctSvd"], attacks=["jpeg", "rotate"], strengths={"jpeg": [90], "rotate": [0, 10]},
            workers=1, progress=False)


def test_battery_rows_and_summary(images, tmp_path):
    rows = battery(images, out=tmp_path / "b", **ARGS)
    # 3 images x 2 methods x (baseline + jpeg 90 + rotate 0 + rotate 10)
    assert len(rows) == 3 * 2 * 4
    assert set(rows.columns) >= {"image", "method", "attack", "strength", "bit_accuracy", "score", "clean_score"}
    base = rows[rows.attack == "none"]
    assert (base.bit_accuracy > 0.75).all()  # 256 px: only ~7 blocks vote for each of 136 bits
    rot0 = rows[(rows.attack == "rotate") & (rows.strength == 0)].set_index(["image", "method"])
    assert np.allclose(rot0.bit_accuracy, base.set_index(["image", "method"]).loc[rot0.index].bit_accuracy)  # identity
    table = summarize(rows)
    svd_jpeg = table[(table.method == "dwtDctSvd") & (table.attack == "jpeg")].iloc[0]
    assert svd_jpeg["bit_accuracy"] > 0.95 and svd_jpeg["tpr@1.0%fpr"] == 1.0
    dct_rot = table[(table.method == "dwtDct") & (table.attack == "rotate") & (table.strength == 10)].iloc[0]
    assert dct_rot["bit_accuracy"] < 0.65


def test_battery_resumes_and_refuses_other_arguments(images, tmp_path, monkeypatch):
    out = tmp_path / "b"
    first = battery(dict(list(images.items())[:2]), out=out, **{**ARGS, "methods": ["dwtDct"]})
    assert len(pd.read_parquet(out / "rows.parquet")) == len(first) == 2 * 4

    calls = []
    real = battery_lib.run_unit
    monkeypatch.setattr(battery_lib, "run_unit", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    again = battery(dict(list(images.items())[:2]), out=out, **{**ARGS, "methods": ["dwtDct"]})
    assert calls == []  # nothing recomputed
    pd.testing.assert_frame_equal(again, first)

    with pytest.raises(StoreError, match=r"other arguments \(differs in: images\)"):
        battery(images, out=out, **{**ARGS, "methods": ["dwtDct"]})
    with pytest.raises(StoreError, match="differs in: plan"):
        battery(dict(list(images.items())[:2]), out=out, **{**ARGS, "methods": ["dwtDct"], "strengths": {"jpeg": [50], "rotate": [0, 10]}})


def test_interrupted_battery_keeps_finished_units(images, tmp_path, monkeypatch):
    from sdlab.errors import Cancelled

    out = tmp_path / "b"

    def stop_after_one(done, total):
        if done == 1:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        battery(images, out=out, callback=stop_after_one, **{**ARGS, "methods": ["dwtDct"]})
    assert len(pd.read_parquet(out / "rows.parquet")) == 4  # one unit on disk
    calls = []
    real = battery_lib.run_unit
    monkeypatch.setattr(battery_lib, "run_unit", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    rows = battery(images, out=out, **{**ARGS, "methods": ["dwtDct"]})
    assert len(calls) == 2 and len(rows) == 12


def test_battery_bad_arguments(images):
    with pytest.raises(ValidationError, match="attacks: 'smudge'"):
        battery(images, attacks=["smudge"], workers=1, progress=False)
    with pytest.raises(ValidationError, match=r"strengths: \{\'blur\': \[1\]\} is not valid; valid: strengths for the attacks being run only \(jpeg\)"):
        battery(images, attacks=["jpeg"], strengths={"blur": [1]}, workers=1, progress=False)
    with pytest.raises(ValidationError, match="method"):
        battery(images, methods=["lsb"], workers=1, progress=False)


def test_battery_uses_two_processes(images, tmp_path):
    rows = battery(images, workers=2, **{k: v for k, v in ARGS.items() if k != "workers"})
    single = battery(images, **ARGS)
    pd.testing.assert_frame_equal(rows, single)
