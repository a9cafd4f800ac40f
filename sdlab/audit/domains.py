"""Which websites the images come from: hosts and registrable domains by the Public Suffix List.

Baio's audit of LAION-Aesthetics found 47% of images on 100 domains and
Pinterest alone at 8.5%: a few sites shape what the model learns. Domains are
registrable domains by the PSL's ICANN section (``bbc.co.uk``, not ``co.uk``;
``s3.amazonaws.com`` counts as ``amazonaws.com``), offline, from the list the
``publicsuffixlist`` package ships. The engine only groups URLs by their
scheme+authority prefix; each distinct prefix is parsed here once.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Callable

import pandas as pd

from ..errors import DependencyError, ValidationError
from .dataset import Dataset
from .expr import AUTHORITY_REGEX, authority, col
from ..progress import Reporter
from .results import AuditResult
from .schema import not_available

INVALID = "(invalid)"
IP_BUCKET = "(ip address)"
UNCATEGORISED = "uncategorised"
IDN_FORMS = ("punycode", "unicode")
_AUTHORITY = re.compile(AUTHORITY_REGEX)
_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*:$")
_SCHEME_ONLY = re.compile(r"^[a-z][a-z0-9+.\-]*:(?![0-9])")  # mailto:, data:, javascript: (not host:port)
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_\-]{0,61}[a-z0-9_])?$")


@dataclass(frozen=True)
class HostInfo:
    """``kind`` is ``domain``, ``ip`` or ``invalid``; ``host`` has ``www.``, port and credentials stripped."""

    host: str | None
    domain: str | None
    kind: str


_INVALID = HostInfo(None, None, "invalid")


@lru_cache(maxsize=1)
def _psl():
    try:
        from publicsuffixlist import PublicSuffixList
    except ImportError as exc:  # pragma: no cover - a dependency
        raise DependencyError("domains need publicsuffixlist: pip install publicsuffixlist") from exc
    return PublicSuffixList(only_icann=True)  # the copy shipped with the package; nothing is fetched


def _to_unicode(name: str) -> str:
    labels = []
    for label in name.split("."):
        try:
            labels.append(label.encode("ascii").decode("idna") if label.startswith("xn--") else label)
        except UnicodeError:
            labels.append(label)
    return ".".join(labels)


@lru_cache(maxsize=1 << 20)
def parse_authority(value: str | None, idn: str = "punycode") -> HostInfo:
    """Host and registrable domain of a URL (or of its scheme+authority prefix); never raises.

    Lower-cased; credentials, port, trailing dot and a leading ``www.`` are
    stripped; IDNs come out in punycode (``idn="punycode"``) or Unicode; IPv4
    and IPv6 addresses are ``kind="ip"``; anything without a registrable
    domain (empty, null, ``mailto:``, a bare suffix, a single label) is ``invalid``.
    """
    if idn not in IDN_FORMS:
        raise ValidationError(f"idn: {idn!r} is not one of {', '.join(IDN_FORMS)}")
    if not isinstance(value, str):
        return _INVALID
    key = _AUTHORITY.match(value.strip()).group(0).strip().lower()
    if "//" in key:
        scheme, _, auth = key.partition("//")
        if scheme and not _SCHEME.match(scheme):
            return _INVALID
    elif _SCHEME_ONLY.match(key):
        return _INVALID
    else:
        auth = key  # no scheme: "www.example.com/a.jpg"
    auth = auth.rpartition("@")[2]
    if auth.startswith("["):  # [IPv6]:port
        end = auth.find("]")
        return _ip(auth[1:end]) if end > 0 else _INVALID
    try:  # a bare IPv6 address has colons but no port
        return HostInfo(str(ipaddress.ip_address(auth)), None, "ip")
    except ValueError:
        pass
    host, sep, port = auth.partition(":")
    if sep and port and not port.isdigit():
        return _INVALID
    host = host.rstrip(".")
    if _ip(host).kind == "ip":
        return _ip(host)
    labels = host.split(".")
    ascii_labels = []
    for label in labels:
        if not label.isascii():
            try:
                label = label.encode("idna").decode("ascii")
            except UnicodeError:
                return _INVALID
        if not _LABEL.match(label):
            return _INVALID
        ascii_labels.append(label)
    host = ".".join(ascii_labels)
    if len(host) > 253 or ascii_labels[-1].isdigit():  # no top-level domain is numeric
        return _INVALID
    domain = _psl().privatesuffix(host)
    if not domain:
        return _INVALID
    if host.startswith("www.") and host != domain:
        host = host[4:]
    if idn == "unicode":
        host, domain = _to_unicode(host), _to_unicode(domain)
    return HostInfo(host, domain, "domain")


def _ip(text: str) -> HostInfo:
    try:
        return HostInfo(str(ipaddress.ip_address(text)), None, "ip")
    except ValueError:
        return _INVALID


def is_pinterest(domain: str) -> bool:
    """Pinterest's image CDN (``pinimg.com``) or any ``pinterest.<suffix>``."""
    return domain == "pinimg.com" or domain.split(".", 1)[0] == "pinterest"


def load_categories(path: str | None = None) -> dict[str, str]:
    """``{domain: category}`` from the curated map shipped with sdlab (or your own CSV: domain,category)."""
    if path is None:
        with resources.files("sdlab.audit").joinpath("data/domain_categories.csv").open("r", encoding="utf-8") as fh:
            frame = pd.read_csv(fh, comment="#")
    else:
        frame = pd.read_csv(path, comment="#")
    missing = {"domain", "category"} - set(frame.columns)
    if missing:
        raise ValidationError(f"categories: {path} needs columns domain and category (missing {', '.join(sorted(missing))})")
    return dict(zip(frame["domain"].str.strip().str.lower(), frame["category"].str.strip()))


def host_counts(ds: Dataset, idn: str = "punycode", callback: Callable[[int, int], None] | None = None,
                progress: bool = False) -> pd.DataFrame:
    """Rows per distinct host, with its registrable domain and kind (one parse per distinct URL prefix)."""
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
                  callback: Callable[[int, int], None] | None = None, progress: bool = False) -> AuditResult:
    """Registrable domains ranked by rows: share, cumulative share, category; top-``top`` coverage and Pinterest's share.

    Shares are of all rows, invalid and IP-address rows included, as in
    Baio's 47%-on-100-domains figure. ``table`` holds every domain.
    """
    if top < 1:
        raise ValidationError(f"top: must be at least 1, got {top}")
    reason = not_available("domains", ds.columns)
    if reason:
        return AuditResult.not_available("domains", reason)
    hosts = host_counts(ds, idn, callback, progress)
    rows = int(hosts["count"].sum())
    cats = categories if isinstance(categories, dict) else load_categories(categories)
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
