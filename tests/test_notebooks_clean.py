"""Notebooks are stored without outputs, start with a parameter cell, and end with exercises that have solutions."""
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


@pytest.mark.parametrize("path", NOTEBOOKS + sorted((NOTEBOOKS[0].parent / "solutions").glob("*.ipynb")), ids=lambda p: p.name)
def test_stored_without_outputs(path):
    for cell in _cells(path):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, f"{path.name} has outputs; clear them"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_first_exercises_last_and_solutions_exist(path):
    cells = _cells(path)
    first_code = next(c for c in cells if c["cell_type"] == "code")
    assert "MODEL" in "".join(first_code["source"]) and "DEVICE" in "".join(first_code["source"])
    last = "".join(cells[-1]["source"])
    assert cells[-1]["cell_type"] == "markdown" and "Exercises" in last
    assert 2 <= sum(line[:2] in {f"{i}." for i in range(1, 10)} for line in last.splitlines()) <= 4
    stem = path.stem
    assert (path.parent / "solutions" / f"{stem}_solutions.ipynb").exists()
