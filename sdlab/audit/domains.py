"""Which websites the images come from: rows per registrable domain, coverage and categories.

Baio's audit of LAION-Aesthetics found 47% of images on 100 domains and
Pinterest alone at 8.5%: a few sites shape what the model learns. The engine
only groups URLs by their scheme+authority prefix; each distinct prefix is
parsed once, in Python, by :func:`~sdlab.audit.hosts.parse_authority`.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import pandas as pd

from ..io import read_table
from ..progress import Callback, Reporter
from ..validation import POSITIVE_INT, Check, invalid, validate_params
from .dataset import Dataset
from .expr import authority, col
from .hosts import CONSTRAINTS as HOST_CONSTRAINTS
from .hosts import is_pinterest, parse_authority
from .results import AuditResult
from .schema import not_available

INVALID = "(invalid)"
IP_BUCKET = "(ip address)"
UNCATEGORISED = "uncategorised"
CATEGORIES_CSV = "a CSV file with columns domain and category"
CONSTRAINTS = {
    "top": [POSITIVE_INT],
    "categories": [None, dict, Check(lambda p: isinstance(p, (str, os.PathLike)), CATEGORIES_CSV)],
    **HOST_CONSTRAINTS,
}


def load_categories(path: str | os.PathLike | None = None) -> dict[str, str]:
    """``{domain: category}`` from the curated map shipped with sdlab (or your own CSV: domain,category)."""
    if path is None:
        with resources.files("sdlab.audit").joinpath("data/domain_categories.csv").open("r", encoding="utf-8") as fh:
            frame = pd.read_csv(fh, comment="#")
    elif Path(path).is_file():
        frame = read_table("categories", path, comment="#")
    else:
        raise invalid("categories", str(path), CATEGORIES_CSV)
    missing = {"domain", "category"} - set(frame.columns)
    if missing:
        raise invalid("categories", str(path), f"{CATEGORIES_CSV} (missing {', '.join(sorted(missing))})")
    return dict(zip(frame["domain"].str.strip().str.lower(), frame["category"].str.strip()))


def host_counts(ds: Dataset, idn: str = "punycode", callback: Callback | None = None,
                progress: bool = False) -> pd.DataFrame:
    """Rows per distinct host, with its registrable domain and kind (one parse per distinct URL prefix)."""
    validate_params({"idn": idn}, CONSTRAINTS)
    with Reporter(callback, progress, "hosts") as report:
        prefixes = ds.engine.group_count({"authority": authority(col("URL"))}, callback=report)
    parsed = [parse_authority(a, idn) for a in prefixes["authority"]]
    frame = pd.DataFrame({
        "host": [p.host for p in parsed],
        "domain": [p.domain if p.kind == "domain" else (IP_BUCKET if p.kind == "ip" else INVALID) for p in parsed],
        "kind": [p.kind for p in parsed],
        "count": prefixes["count"].to_numpy(),
    })
    frame["host"] = frame["host"].fillna(INVALID)
    out = frame.groupby(["host", "domain", "kind"], as_index=False, sort=False)["count"].sum()
    return out.sort_values(["count", "host"], ascending=[False, True], kind="stable").reset_index(drop=True)


def domain_counts(ds: Dataset, top: int = 100, idn: str = "punycode", categories: str | dict | None = None,
                  callback: Callback | None = None, progress: bool = False) -> AuditResult:
    """Registrable domains ranked by rows: share, cumulative share, category; top-``top`` coverage and Pinterest's share.

    Shares are of all rows, invalid and IP-address rows included, as in
    Baio's 47%-on-100-domains figure. ``table`` holds every domain.
    """
    validate_params({"top": top, "idn": idn, "categories": categories}, CONSTRAINTS)
    reason = not_available("domains", ds.columns)
    if reason:
        return AuditResult.not_available("domains", reason)
    cats = categories if isinstance(categories, dict) else load_categories(categories)  # a bad CSV fails before the work
    hosts = host_counts(ds, idn, callback, progress)
    rows = int(hosts["count"].sum())
    real = hosts[hosts["kind"] == "domain"]
    table = real.groupby("domain", as_index=False)["count"].sum()
    table = table.sort_values(["count", "domain"], ascending=[False, True], kind="stable").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    denom = max(rows, 1)
    table["share"] = table["count"] / denom
    table["cumulative_share"] = table["count"].cumsum() / denom
    table["category"] = [cats.get(d, UNCATEGORISED) for d in table["domain"]]

    by_kind = hosts.groupby("kind")["count"].sum()
    buckets = pd.DataFrame({"kind": ["domain", "ip", "invalid"]})
    buckets["count"] = [int(by_kind.get(k, 0)) for k in buckets["kind"]]
    buckets["share"] = buckets["count"] / denom
    category = table.groupby("category", as_index=False).agg(domains=("domain", "size"), count=("count", "sum"))
    category["share"] = category["count"] / denom
    category = category.sort_values(["count", "category"], ascending=[False, True]).reset_index(drop=True)
    pinterest = int(table.loc[[is_pinterest(d) for d in table["domain"]], "count"].sum())
    stats = {
        "rows": rows,
        "invalid": int(by_kind.get("invalid", 0)),
        "ip_addresses": int(by_kind.get("ip", 0)),
        "distinct_hosts": int((real["host"] != INVALID).sum()),
        "distinct_domains": len(table),
        "top": int(top),
        "top_share": float(table["count"].head(top).sum() / denom),
        "top100_share": float(table["count"].head(100).sum() / denom),
        "pinterest_share": pinterest / denom,
        "largest_domain": table["domain"].iloc[0] if len(table) else None,
    }
    notes = [f"domains by the Public Suffix List, ICANN section; IDNs in {idn}; shares of all {rows} rows"]
    return AuditResult("domains", table, stats=stats, notes=notes,
                       tables={"categories": category, "buckets": buckets,
                               "hosts": hosts.head(max(top, 100)).reset_index(drop=True)})


def domains_json(result: AuditResult, top: int) -> dict:
    """The CLI's ``--json`` object: rows, invalid, distinct_domains, top100_share and the top list."""
    s = result.stats
    head = result.table.head(top)
    return {
        "rows": s["rows"], "invalid": s["invalid"], "distinct_domains": s["distinct_domains"],
        "top100_share": s["top100_share"], "pinterest_share": s["pinterest_share"],
        "top": [{"domain": d, "count": int(c), "share": float(sh)}
                for d, c, sh in zip(head["domain"], head["count"], head["share"])],
    }
