"""open_dataset: formats, shards and globs, column-name variants, 'not available' instead of errors."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from sdlab.audit import open_dataset, run_analysis
from sdlab.audit.schema import availability, map_columns
from sdlab.errors import DataError, ValidationError

FRAME = pd.DataFrame({
    "URL": ["https://a.example.com/1.jpg", "https://b.example.org/2.jpg", "http://c.co.uk/3.jpg", None],
    "TEXT": ["a red cat", "a nurse with her dog", None, "ein Hund im Park"],
    "WIDTH": [640, 300, 1024, 512],
    "HEIGHT": [480, 300, 2048, 512],
})


def test_column_variants_map_to_canonical_names():
    names = ["url", "caption", "key", "status", "width", "height", "original_width", "original_height",
             "aesthetic", "pwatermark", "PUNSAFE", "similarity", "lang"]
    m = map_columns(names)
    assert m == {"URL": "url", "TEXT": "caption", "WIDTH": "original_width", "HEIGHT": "original_height",
                 "AESTHETIC_SCORE": "aesthetic", "pwatermark": "pwatermark", "punsafe": "PUNSAFE",
                 "similarity": "similarity", "LANGUAGE": "lang"}
    assert map_columns(["URL", "TEXT", "AESTHETIC_SCORE", "LANGUAGE"])["AESTHETIC_SCORE"] == "AESTHETIC_SCORE"
    assert map_columns(names, ["URL"]) == {"URL": "url"}
    with pytest.raises(ValidationError, match="columns"):
        map_columns(names, ["COLOUR"])


def test_availability_names_what_is_missing():
    a = availability(["URL", "TEXT"])
    assert a["domains"] == "available" and a["captions"] == "available" and a["languages"] == "available"
    assert a["sizes"] == "not available: needs WIDTH and HEIGHT"
    assert a["scores"].startswith("not available: needs one of AESTHETIC_SCORE")


def _write(frame: pd.DataFrame, tmp_path, kind: str):
    renamed = frame.rename(columns={"URL": "url", "TEXT": "caption", "WIDTH": "width", "HEIGHT": "height"})
    if kind == "parquet":
        path = tmp_path / "one.parquet"
        renamed.to_parquet(path)
    elif kind == "shards":
        path = tmp_path / "shards"
        path.mkdir()
        renamed.iloc[:2].to_parquet(path / "part-0.parquet")
        renamed.iloc[2:].to_parquet(path / "part-1.parquet")
    elif kind == "glob":
        (tmp_path / "g").mkdir()
        renamed.iloc[:3].to_parquet(tmp_path / "g" / "a.parquet")
        renamed.iloc[3:].to_parquet(tmp_path / "g" / "b.parquet")
        path = str(tmp_path / "g" / "*.parquet")
    elif kind == "csv":
        path = tmp_path / "d.csv"
        renamed.to_csv(path, index=False)
    elif kind == "tsv":
        path = tmp_path / "d.tsv"
        renamed.to_csv(path, index=False, sep="\t")
    else:
        path = tmp_path / "d.jsonl"
        records = renamed.astype(object).where(renamed.notna(), None).to_dict(orient="records")
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("kind", ["parquet", "shards", "glob", "csv", "tsv", "jsonl"])
def test_every_format_gives_the_same_answers(tmp_path, kind):
    ds = open_dataset(_write(FRAME, tmp_path, kind))
    assert ds.columns == ["URL", "TEXT", "WIDTH", "HEIGHT"]
    assert ds.rows == 4
    dom = run_analysis(ds, "domains")
    assert dom.table.set_index("domain")["count"].to_dict() == {"example.com": 1, "example.org": 1, "c.co.uk": 1}
    assert dom.stats["invalid"] == 1
    sz = run_analysis(ds, "sizes")
    assert sz.stats["rows_short_side_ge_min"] == 2  # 1024x2048 and 512x512


def test_missing_columns_are_not_available_not_errors():
    ds = open_dataset(pd.DataFrame({"url": ["http://a.com/x"], "text": ["hi"]}))
    for analysis in ("sizes", "scores", "funnel"):
        r = run_analysis(ds, analysis)
        assert not r.available and r.notes[0].startswith("not available")
        assert r.table.empty and r.figures() == {}
    summary = ds.summary()
    assert summary.stats["rows"] == 1
    assert dict(zip(summary.table["analysis"], summary.table["status"]))["sizes"].startswith("not available")


def test_columns_argument_limits_what_is_read():
    ds = open_dataset(FRAME, columns=["URL"])
    assert ds.columns == ["URL"]
    assert not run_analysis(ds, "captions").available


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "nope.parquet")
    with pytest.raises(DataError, match="matches no files"):
        open_dataset(str(tmp_path / "*.parquet"))
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataError, match="not parquet"):
        open_dataset(tmp_path / "x.txt")
    with pytest.raises(DataError, match="known LAION column"):
        open_dataset(pd.DataFrame({"a": [1]}))
    with pytest.raises(ValidationError, match="engine"):
        open_dataset(FRAME, engine="spark")
    with pytest.raises(ValidationError, match="analysis"):
        run_analysis(open_dataset(FRAME), "colours")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    FRAME.to_parquet(mixed / "a.parquet")
    FRAME.to_csv(mixed / "b.csv")
    with pytest.raises(DataError, match="mixes formats"):
        open_dataset(mixed)


def test_remote_paths_resolve_without_network():
    from sdlab.audit.sources import resolve

    s = resolve("s3://bucket/laion/part-*.parquet")
    assert s.remote and s.format == "parquet" and s.paths == ["s3://bucket/laion/part-*.parquet"]
    assert resolve("hf://datasets/org/name/data/*.parquet").format == "parquet"
    with pytest.raises(DataError, match="format"):
        resolve("s3://bucket/laion/")


def test_examples_by_domain_and_term():
    ds = open_dataset(FRAME)
    assert ds.examples(domain="example.org")["TEXT"].tolist() == ["a nurse with her dog"]
    assert ds.examples(term="NURSE")["URL"].tolist() == ["https://b.example.org/2.jpg"]
    assert ds.examples(term="nurs").empty  # whole words only
    assert len(ds.examples(n=2)) == 2


def test_save_writes_tables_and_plots(tmp_path):
    r = run_analysis(open_dataset(FRAME), "domains")
    written = {p.name for p in r.save(tmp_path)}
    assert {"domains.csv", "domains.parquet", "domains_stats.json", "domains_rank_share.png",
            "domains_coverage.png", "domains_categories.csv"} <= written
    assert pd.read_parquet(tmp_path / "domains.parquet")["count"].sum() == 3
    assert json.loads((tmp_path / "domains_stats.json").read_text())["stats"]["invalid"] == 1
