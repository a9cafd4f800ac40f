"""``sdlab audit``: text and JSON output, --out files, not-available messages, one-line errors."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from sdlab.cli import main

FRAME = pd.DataFrame({
    "url": ["https://i.pinimg.com/a.jpg", "https://i.pinimg.com/b.jpg", "https://cdn.shopify.com/c.jpg", "UNLIKELY"],
    "caption": ["a nurse and her dog", "a man", "an engineer and his desk", "a red cat"],
})


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "meta.parquet"
    FRAME.to_parquet(path)
    return path


def test_summary(data, capsys):
    assert main(["audit", "summary", str(data)]) == 0
    out = capsys.readouterr().out
    assert "rows: 4" in out and "URL -> url" in out and "not available: needs WIDTH and HEIGHT" in out


def test_domains_json(data, capsys):
    assert main(["audit", "domains", str(data), "--top", "1", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["rows"] == 4 and obj["invalid"] == 1 and obj["distinct_domains"] == 2
    assert obj["top100_share"] == pytest.approx(0.75)
    assert obj["top"] == [{"domain": "pinimg.com", "count": 2, "share": 0.5}]


def test_domains_out_and_dask(data, tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["audit", "domains", str(data), "--out", str(out), "--engine", "dask"]) == 0
    assert "pinimg.com" in capsys.readouterr().out
    assert (out / "domains.parquet").exists() and (out / "domains_coverage.png").exists()


def test_other_analyses_and_not_available(data, capsys):
    assert main(["audit", "captions", str(data), "--n-boot", "50"]) == 0
    assert "nurse" in capsys.readouterr().out
    assert main(["audit", "funnel", str(data)]) == 0
    assert "not available" in capsys.readouterr().out
    assert main(["audit", "sizes", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["available"] is False


def test_bad_input_is_one_line_error(tmp_path, data, capsys):
    assert main(["audit", "domains", str(tmp_path / "missing.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: path:") and err.count("\n") == 1
    assert main(["audit", "domains", str(data), "--top", "0"]) == 2
    assert "top: 0 is not valid" in capsys.readouterr().err
    assert main(["audit", "domains", str(data), "--scheduler", "local"]) == 2
    assert "scheduler: 'local' is not valid" in capsys.readouterr().err
