"""Term lists (occupations, gendered words, your own) and the regex that finds a term in a caption.

The caption co-occurrence counts and the dataset's example lookup both match
whole words the same way, under RE2 (DuckDB) and Python's re alike, so the
matching lives here, below both.
"""
from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

import pandas as pd

from ..io import read_table
from ..validation import invalid

TermLists = dict[str, list[str]]
SHIPPED = {"occupations": "occupations.csv", "gender": "gender_terms.csv"}
TERMS_VALID = f"one of {', '.join(SHIPPED)}, a CSV file with columns group and term, or a dict of term lists"


def load_terms(terms: str | os.PathLike | TermLists, name: str = "terms") -> TermLists:
    """``{group: [terms]}`` from a shipped list name (``occupations``, ``gender``), a CSV (group,term) or a dict.

    ``name`` is the parameter the list came in as, for the error message.
    """
    if isinstance(terms, dict):
        out = {str(g): [str(t).strip().lower() for t in ts if str(t).strip()] for g, ts in terms.items()}
    elif not isinstance(terms, (str, os.PathLike)):
        raise invalid(name, terms, TERMS_VALID)
    else:
        if str(terms) in SHIPPED:
            with resources.files("sdlab.audit").joinpath("data", SHIPPED[str(terms)]).open("r", encoding="utf-8") as fh:
                frame = pd.read_csv(fh, comment="#")
        else:
            path = Path(terms)
            if not path.is_file():
                raise invalid(name, str(terms), TERMS_VALID)
            frame = read_table(name, path, comment="#")
            if not {"group", "term"} <= set(frame.columns):
                raise invalid(name, str(terms), "a CSV file with columns group and term")
        out = {}
        for g, t in zip(frame["group"].astype(str), frame["term"].astype(str)):
            out.setdefault(g.strip(), []).append(t.strip().lower())
    out = {g: ts for g, ts in out.items() if ts}
    if not out:
        raise invalid(name, terms, "a list with at least one group holding one term")
    return out


def term_regex(terms: list[str]) -> str:
    """Whole-word, any of ``terms``; the same meaning under RE2 (DuckDB) and Python's re."""
    words = "|".join(re.escape(t).replace(r"\ ", r"\s+") for t in sorted(set(terms), key=len, reverse=True))
    return rf"(?:^|[^a-z0-9])(?:{words})(?:$|[^a-z0-9])"
