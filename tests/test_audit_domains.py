"""Host and registrable-domain parsing, and domain counts on the shared LAION sample."""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import pandas as pd
import pytest

from sdlab.audit import open_dataset
from sdlab.audit.domains import INVALID, domain_counts, domains_json, load_categories
from sdlab.audit.hosts import is_pinterest, parse_authority

CASES = [
    # url, host, registrable domain
    ("http://www.example.co.uk/a.jpg", "example.co.uk", "example.co.uk"),
    ("https://images.news.bbc.co.uk/x.png", "images.news.bbc.co.uk", "bbc.co.uk"),
    ("https://a.b.shop.example.com.au/x", "a.b.shop.example.com.au", "example.com.au"),
    ("https://cdn.site.com.br/x", "cdn.site.com.br", "site.com.br"),
    ("http://s3.amazonaws.com/bucket/x.jpg", "s3.amazonaws.com", "amazonaws.com"),  # private section ignored
    ("https://foo.blogspot.com/x.jpg", "foo.blogspot.com", "blogspot.com"),
    ("https://someone.github.io/img.png", "someone.github.io", "github.io"),
    ("http://user:secret@WWW.Example.COM:8080/x.jpg", "example.com", "example.com"),
    ("HTTPS://I.PINIMG.COM/736x/a.jpg", "i.pinimg.com", "pinimg.com"),
    ("www.example.com/img.jpg", "example.com", "example.com"),  # no scheme
    ("cdn.example.org:443/a.jpg", "cdn.example.org", "example.org"),
    ("//static.example.net/a.jpg", "static.example.net", "example.net"),  # protocol-relative
    ("http://example.com./x.jpg", "example.com", "example.com"),  # trailing dot
    ("http://www.com/x.jpg", "www.com", "www.com"),  # www is the domain itself here
    ("  https://example.com/x?a=b#c  ", "example.com", "example.com"),
    ("http://xn--bcher-kva.de/x", "xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("http://Bücher.de/x", "xn--bcher-kva.de", "xn--bcher-kva.de"),  # IDN -> punycode, same bucket
    ("http://www.例え.jp/x", "xn--r8jz45g.jp", "xn--r8jz45g.jp"),
]
IPS = [
    ("http://192.168.0.1:8080/x.jpg", "192.168.0.1"),
    ("http://user@10.0.0.7/x.jpg", "10.0.0.7"),
    ("http://[2001:db8::1]:80/x.jpg", "2001:db8::1"),
    ("http://[2001:DB8::1]/x.jpg", "2001:db8::1"),
]
INVALIDS = ["", None, float("nan"), "UNLIKELY", "not a url", "http://", "mailto:someone@example.com",
            "data:image/png;base64,iVBORw0K", "javascript:void(0)", "http://co.uk/x.jpg", "http://com/x",
            "http://exa mple.com/x", "http://example.com:http/x", "http://localhost/x.jpg", "http://1.2.3/x",
            "http://[::1/x", "ht!tp://example.com/x", "http://-bad-.com/x", "http://" + "a" * 70 + ".com/x"]


@pytest.mark.parametrize("url,host,domain", CASES)
def test_hosts_and_registrable_domains(url, host, domain):
    info = parse_authority(url)
    assert (info.kind, info.host, info.domain) == ("domain", host, domain)


@pytest.mark.parametrize("url,address", IPS)
def test_ip_addresses_are_their_own_kind(url, address):
    info = parse_authority(url)
    assert (info.kind, info.host, info.domain) == ("ip", address, None)


@pytest.mark.parametrize("url", INVALIDS)
def test_unparseable_urls_are_invalid_not_errors(url):
    assert parse_authority(url).kind == "invalid"


def test_idn_unicode_form_is_consistent():
    a = parse_authority("http://xn--bcher-kva.de/x", idn="unicode")
    b = parse_authority("http://bücher.de/x", idn="unicode")
    assert a == b and a.domain == "bücher.de"


def test_pinterest_and_categories():
    assert is_pinterest("pinimg.com") and is_pinterest("pinterest.co.uk") and not is_pinterest("notpinterest.com")
    cats = load_categories()
    assert cats["pinimg.com"] == "social" and cats["dreamstime.com"] == "stock photo"
    assert set(cats.values()) <= {"stock photo", "e-commerce platform", "CDN/cloud storage", "blog host", "social", "news"}


def test_domain_counts_small_frame_known_answers():
    urls = ["https://i.pinimg.com/a.jpg", "https://i.pinimg.com/b.jpg", "http://www.pinterest.co.uk/c.jpg",
            "https://cdn.shopify.com/1.jpg", "http://1.2.3.4/x.jpg", "UNLIKELY", None,
            "https://A.Example.com/x", "https://b.example.com/y"]
    r = domain_counts(open_dataset(pd.DataFrame({"URL": urls})), top=2)
    t = r.table.set_index("domain")
    assert t["count"].to_dict() == {"pinimg.com": 2, "example.com": 2, "pinterest.co.uk": 1, "shopify.com": 1}
    assert list(r.table["domain"][:2]) == ["example.com", "pinimg.com"]  # ties broken by name
    assert r.stats["rows"] == 9 and r.stats["invalid"] == 2 and r.stats["ip_addresses"] == 1
    assert r.stats["distinct_domains"] == 4 and r.stats["distinct_hosts"] == 5
    assert r.stats["pinterest_share"] == pytest.approx(3 / 9)
    assert r.stats["top_share"] == pytest.approx(4 / 9) and r.stats["top100_share"] == pytest.approx(6 / 9)
    assert r.table["cumulative_share"].iloc[-1] == pytest.approx(6 / 9)
    j = domains_json(r, 2)
    assert set(j) >= {"rows", "invalid", "distinct_domains", "top100_share", "top"}
    assert j["top"][0] == {"domain": "example.com", "count": 2, "share": pytest.approx(2 / 9)}


def _direct_domain(url: str) -> str:
    """An independent per-row computation: urllib's hostname, then the PSL."""
    from publicsuffixlist import PublicSuffixList

    psl = _direct_domain.psl = getattr(_direct_domain, "psl", None) or PublicSuffixList(only_icann=True)
    host = urlsplit(url).hostname
    try:
        ipaddress.ip_address(host or "")
        return "IP"
    except ValueError:
        pass
    domain = psl.privatesuffix(host.encode("idna").decode() if host else "") if host else None
    return domain or INVALID


def test_sample_counts_equal_direct_pandas(laion_sample):
    frame = pd.read_parquet(laion_sample)
    direct = frame["URL"].map(_direct_domain).value_counts()
    r = domain_counts(open_dataset(laion_sample))
    ours = r.table.set_index("domain")["count"]
    assert r.stats["rows"] == len(frame)
    assert r.stats["invalid"] == direct.get(INVALID, 0)
    assert r.stats["ip_addresses"] == direct.get("IP", 0)
    assert ours.sort_index().to_dict() == direct.drop([INVALID, "IP"], errors="ignore").sort_index().to_dict()


def test_sample_matches_reference_figures(laion_sample):
    r = domain_counts(open_dataset(laion_sample))
    assert list(r.table["domain"][:4]) == ["shopify.com", "wp.com", "dreamstime.com", "pinimg.com"]
    assert 3400 <= r.stats["distinct_domains"] <= 3800
    assert 0.4 <= r.stats["top100_share"] <= 0.6
    assert r.stats["invalid"] == 1
