"""DuckDB and Dask give identical answers on the same data."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("dask.dataframe")

from sdlab.audit import open_dataset, run_analysis
from sdlab.audit.expr import authority, bin_, col, ge, least, matches, num, ratio

ANALYSES = ["domains", "sizes", "scores", "funnel", "captions", "languages"]


def _frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hosts = ["i.pinimg.com", "cdn.shopify.com", "www.Example.co.uk:8080", "user@x.blogspot.com", "1.2.3.4",
             "bücher.de", "s3.amazonaws.com", ""]
    urls = [f"https://{hosts[i]}/img/{k}.jpg" for k, i in enumerate(rng.integers(0, len(hosts), n))]
    urls[::97] = [None] * len(urls[::97])
    urls[5] = "UNLIKELY"
    words = ["a nurse and her cat", "an engineer with his tools", "a woman doctor", "the man", "ein Hund",
             "une maison rouge", None, "NaN", "police  officer"]
    w = rng.integers(100, 2000, n).astype(float)
    w[::50] = np.nan
    return pd.DataFrame({
        "URL": urls,
        "TEXT": [words[i] for i in rng.integers(0, len(words), n)],
        "WIDTH": w, "HEIGHT": rng.integers(100, 2000, n),
        "AESTHETIC_SCORE": np.where(rng.random(n) < 0.05, np.nan, rng.uniform(3, 8, n)),
        "pwatermark": rng.random(n), "punsafe": rng.random(n) ** 3, "similarity": rng.uniform(0.2, 0.45, n),
    })


@pytest.fixture(scope="module")
def parquet_shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    frame = _frame()
    for i in range(4):
        frame.iloc[i * 750:(i + 1) * 750].to_parquet(d / f"part-{i}.parquet")
    return d


def _same(a, b):
    pd.testing.assert_frame_equal(a.table, b.table)
    for k in a.tables:
        pd.testing.assert_frame_equal(a.tables[k], b.tables[k])
    assert a.stats == b.stats


@pytest.mark.parametrize("analysis", ANALYSES)
def test_engines_agree_on_every_analysis(parquet_shards, analysis):
    duck = open_dataset(parquet_shards)
    dask = duck.with_engine("dask")
    options = {"accuracy": "low"} if analysis == "languages" else {}
    _same(run_analysis(duck, analysis, **options), run_analysis(dask, analysis, **options))


def test_engines_agree_on_expressions(parquet_shards):
    duck = open_dataset(parquet_shards).engine
    dask = open_dataset(parquet_shards, engine="dask").engine
    keys = {"a": authority(col("URL")), "b": bin_(least(num(col("WIDTH")), num(col("HEIGHT"))), 0, 64, 33),
            "r": bin_(ratio(num(col("WIDTH")), num(col("HEIGHT"))), 0, 0.25, 16), "m": matches(col("TEXT"), "nurse|doctor")}
    pd.testing.assert_frame_equal(duck.group_count(keys), dask.group_count(keys))
    conds = {"big": ge(num(col("WIDTH")), 512), "text": matches(col("TEXT"), r"(?:^|[^a-z0-9])nan(?:$|[^a-z0-9])")}
    assert duck.count_where(conds) == dask.count_where(conds)
    assert duck.sample_text("TEXT", 5, seed=3) == dask.sample_text("TEXT", 5, seed=3)


def test_engines_agree_on_the_shared_sample(laion_sample):
    duck = run_analysis(open_dataset(laion_sample), "domains")
    dask = run_analysis(open_dataset(laion_sample, engine="dask"), "domains")
    _same(duck, dask)


@pytest.mark.slow
def test_dask_local_cluster(parquet_shards):
    ds = open_dataset(parquet_shards, engine="dask", scheduler="local")
    try:
        _same(run_analysis(open_dataset(parquet_shards), "domains"), run_analysis(ds, "domains"))
    finally:
        ds.close()


@pytest.mark.parametrize("engine", ["duckdb", "dask"])
def test_callback_reports_and_cancels(parquet_shards, engine):
    from sdlab.audit.domains import domain_counts
    from sdlab.errors import Cancelled

    seen = []
    domain_counts(open_dataset(parquet_shards, engine=engine), callback=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1]

    def stop(done, total):
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        domain_counts(open_dataset(parquet_shards, engine=engine), callback=stop)
