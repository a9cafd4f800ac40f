"""Each analysis on a small frame whose answers are known by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sdlab.audit import open_dataset
from sdlab.audit.captions import caption_terms
from sdlab.audit.funnel import funnel
from sdlab.audit.intervals import wilson
from sdlab.audit.languages import languages
from sdlab.audit.scores import scores
from sdlab.audit.sizes import sizes
from sdlab.audit.terms import load_terms, term_regex
from sdlab.errors import ValidationError

SCORED = pd.DataFrame({
    "URL": [f"http://x{i}.com/a.jpg" for i in range(8)],
    "WIDTH": [512, 1024, 800, 300, 640, np.nan, 2048, 512],
    "HEIGHT": [512, 512, 400, 300, 480, 512, 4096, 511],
    "AESTHETIC_SCORE": [6.5, 5.0, 4.99, 7.0, 5.5, 6.0, np.nan, 5.2],
    "pwatermark": [0.1, 0.6, 0.2, 0.0, 0.49, 0.3, 0.1, 0.2],
    "punsafe": [0.0, 0.0, 0.0, 0.2, 0.05, 0.0, 0.0, 0.09],
})


def test_sizes_known_answers():
    r = sizes(open_dataset(SCORED))
    assert r.stats["rows"] == 8 and r.stats["rows_with_size"] == 7
    assert r.stats["rows_short_side_ge_min"] == 3  # 512x512, 1024x512, 2048x4096
    assert r.stats["share_short_side_ge_min"] == pytest.approx(3 / 7)
    side = dict(zip(r.table["short_side_from_px"], r.table["count"]))
    assert side == {256: 1, 384: 1, 448: 2, 512: 2, 2048: 1}
    aspect = dict(zip(r.tables["aspect"]["aspect_from"], r.tables["aspect"]["count"]))
    assert aspect == {0.5: 1, 1.0: 3, 1.25: 1, 2.0: 2}
    with pytest.raises(ValidationError, match="min_side"):
        sizes(open_dataset(SCORED), min_side=0)


def test_scores_known_answers():
    r = scores(open_dataset(SCORED))
    s = r.stats
    assert s["AESTHETIC_SCORE_rows_with_value"] == 7 and s["AESTHETIC_SCORE_missing"] == 1
    assert s["AESTHETIC_SCORE_share_ge_5"] == pytest.approx(6 / 7)  # 4.99 is below
    assert s["AESTHETIC_SCORE_share_ge_6"] == pytest.approx(3 / 7)
    assert s["pwatermark_share_ge_0.5"] == pytest.approx(1 / 8)
    assert "similarity: not available" in r.notes
    ae = r.table[r.table["column"] == "AESTHETIC_SCORE"]
    assert ae["count"].sum() == 7 and ae["share"].sum() == pytest.approx(1.0)
    assert dict(zip(ae["bin_from"], ae["count"]))[5.0] == 2  # 5.0 and 5.2


def test_funnel_known_answers_and_thresholds():
    r = funnel(open_dataset(SCORED))
    kept = dict(zip(r.table["stage"], r.table["rows_kept"]))
    # aesthetic >= 5: rows 0,1,3,4,5,7; pwatermark < .5 drops 1; punsafe < .1 drops 3; size >= 512 keeps 0 only
    assert kept == {"all rows": 8, "aesthetic": 6, "watermark": 5, "unsafe": 4, "size": 1}
    assert r.stats["share_kept"] == pytest.approx(1 / 8)
    loose = funnel(open_dataset(SCORED), aesthetic_min=0, pwatermark_max=1, punsafe_max=1, min_side=0)
    assert loose.stats["rows_kept"] == 6  # a missing aesthetic score or width fails its stage
    with pytest.raises(ValidationError, match="pwatermark_max"):
        funnel(open_dataset(SCORED), pwatermark_max=2)


def test_funnel_skips_stages_without_columns():
    r = funnel(open_dataset(SCORED[["URL", "WIDTH", "HEIGHT"]]))
    assert list(r.table.loc[r.table["available"], "stage"]) == ["all rows", "size"]
    assert r.stats["rows_kept"] == 3
    assert any(n.startswith("aesthetic") and "not available" in n for n in r.notes)


def test_languages_from_column():
    frame = pd.DataFrame({"URL": ["http://a.com/x"] * 6, "LANGUAGE": ["en", "EN", "de", None, "fr", "en"]})
    r = languages(open_dataset(frame))
    shares = dict(zip(r.table["language"], r.table["count"]))
    assert shares == {"en": 3, "de": 1, "fr": 1, "unknown": 1}
    assert r.stats["english_share"] == pytest.approx(0.5)
    assert 0.15 < r.stats["english_world_speaker_share"] < 0.2
    sp = r.tables["speakers"].set_index("language")
    assert sp.loc["en", "share"] == pytest.approx(0.5) and sp.loc["zh", "share"] == 0


def test_languages_detected_offline():
    texts = ["The quick brown fox jumps over the lazy dog near the river bank this morning",
             "Der schnelle braune Fuchs springt über den faulen Hund und läuft davon",
             "Le renard brun rapide saute par-dessus le chien paresseux dans le jardin",
             "El rápido zorro marrón salta sobre el perro perezoso en el parque"] * 5
    frame = pd.DataFrame({"TEXT": texts + [f"A beautiful old house with a large garden and {i} tall trees" for i in range(20)]})
    r = languages(open_dataset(frame), sample=1000, accuracy="low")
    got = dict(zip(r.table["language"], r.table["count"]))
    assert got["en"] == 21 and got["de"] == 1 and got["fr"] == 1 and got["es"] == 1  # distinct captions only
    assert (r.table["ci_low"] <= r.table["share"]).all() and (r.table["share"] <= r.table["ci_high"]).all()
    with pytest.raises(ValidationError, match="accuracy"):
        languages(open_dataset(frame), accuracy="best")


@pytest.mark.slow
def test_languages_high_accuracy_on_the_sample(laion_sample):
    r = languages(open_dataset(laion_sample), sample=500)
    assert r.table["language"].iloc[0] == "en" and r.stats["english_share"] > 0.75


def test_wilson_interval():
    low, high = wilson(np.array([0, 5, 10]), 10)
    assert low[0] == 0 and high[2] == 1 and low[1] < 0.5 < high[1]
    for n in range(1, 201):  # the bounds hold the share itself, rounding included (100/100 gave 1 - 1e-16)
        k = np.arange(n + 1)
        low, high = wilson(k, n)
        assert (low <= k / n).all() and (k / n <= high).all(), n


def test_term_regex_whole_words():
    import re

    rx = re.compile(term_regex(["nurse", "police officer"]), re.I)
    assert rx.search("A Nurse at work") and rx.search("two police  officers".replace("officers", "officer"))
    assert not rx.search("nursery rhymes") and not rx.search("anurse")


def test_caption_terms_known_counts_and_ci():
    captions = (["a nurse and her patient"] * 30 + ["a male nurse"] * 10 + ["a nurse"] * 20
                + ["an engineer and his laptop"] * 40 + ["a woman engineer"] * 10 + ["a cat"] * 10 + [None])
    ds = open_dataset(pd.DataFrame({"TEXT": captions}))
    r = caption_terms(ds, rows={"nurse": ["nurse"], "engineer": ["engineer"]},
                      columns={"female": ["her", "woman"], "male": ["his", "male"]}, n_boot=500, seed=1)
    t = r.table.set_index(["row_group", "column_group"])
    assert t.loc[("nurse", "female"), "captions"] == 30 and t.loc[("nurse", "male"), "captions"] == 10
    assert t.loc[("nurse", "female"), "row_captions"] == 60
    assert t.loc[("nurse", "female"), "share"] == pytest.approx(0.75)
    assert t.loc[("engineer", "female"), "share"] == pytest.approx(0.2)
    lo, hi = t.loc[("nurse", "female"), ["ci_low", "ci_high"]]
    assert 0.55 < lo < 0.75 < hi < 0.95
    assert r.stats["captions"] == 120
    terms = r.tables["terms"].set_index(["list", "group"])
    assert terms.loc[("rows", "nurse"), "captions"] == 60


def test_shipped_word_lists_load_and_are_editable(tmp_path):
    occ = load_terms("occupations")
    assert "nurse" in occ and "nurses" in occ["nurse"]
    assert set(load_terms("gender")) == {"female", "male"}
    path = tmp_path / "mine.csv"
    path.write_text("group,term\ncolour,red\ncolour,blue\n")
    assert load_terms(path) == {"colour": ["red", "blue"]}
    with pytest.raises(ValidationError, match="terms"):
        load_terms(tmp_path / "missing.csv")
