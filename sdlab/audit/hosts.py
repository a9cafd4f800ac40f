"""A URL's host and registrable domain by the Public Suffix List, offline and never raising.

Registrable domains come from the PSL's ICANN section (``bbc.co.uk``, not
``co.uk``; ``s3.amazonaws.com`` counts as ``amazonaws.com``), from the copy
the ``publicsuffixlist`` package ships, so nothing is fetched. The domain
count and the dataset's example lookup both parse URLs here, which is why this
sits below both of them.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

from ..errors import DependencyError
from ..validation import Options, validate_params
from .expr import AUTHORITY_REGEX

IDN_FORMS = ("punycode", "unicode")
CONSTRAINTS = {"idn": [Options(IDN_FORMS)]}
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


def _ip(text: str) -> HostInfo:
    try:
        return HostInfo(str(ipaddress.ip_address(text)), None, "ip")
    except ValueError:
        return _INVALID


@lru_cache(maxsize=1 << 20)
def parse_authority(value: str | None, idn: str = "punycode") -> HostInfo:
    """Host and registrable domain of a URL (or of its scheme+authority prefix); never raises on the URL.

    Lower-cased; credentials, port, trailing dot and a leading ``www.`` are
    stripped; IDNs come out in punycode (``idn="punycode"``) or Unicode; IPv4
    and IPv6 addresses are ``kind="ip"``; anything without a registrable
    domain (empty, null, ``mailto:``, a bare suffix, a single label) is ``invalid``.
    """
    validate_params({"idn": idn}, CONSTRAINTS)
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
    if _ip(auth).kind == "ip":  # a bare IPv6 address has colons but no port
        return _ip(auth)
    host, sep, port = auth.partition(":")
    if sep and port and not port.isdigit():
        return _INVALID
    host = host.rstrip(".")
    if _ip(host).kind == "ip":
        return _ip(host)
    ascii_labels = []
    for label in host.split("."):
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


def is_pinterest(domain: str) -> bool:
    """Pinterest's image CDN (``pinimg.com``) or any ``pinterest.<suffix>``."""
    return domain == "pinimg.com" or domain.split(".", 1)[0] == "pinterest"
