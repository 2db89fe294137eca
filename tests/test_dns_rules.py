"""`workers.heuristics.dns_rules`: the name-shape rules behind the DGA, long-domain, exhaustion,
DNSBL and NXDOMAIN heuristics (spec 3), with fuzzing since names come off the wire."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.heuristics.dns_rules import (
    CONSONANT_REASON,
    ENTROPY_REASON,
    dga_reason,
    exhaustion_domain,
    is_dnsbl_shaped,
    long_domain_trail,
    looks_like_dnsbl_trail,
    nx_counted,
    nx_keys,
    nx_shape_counted,
)


def _entropy(label: str) -> float:
    return -sum(n / len(label) * math.log2(n / len(label)) for n in Counter(label).values())


# --- DGA --------------------------------------------------------------------------------------


def test_reason_texts() -> None:
    assert ENTROPY_REASON == "entropy threshold no such domain (suspicious)"
    assert CONSONANT_REASON == "consonant threshold no such domain (suspicious)"


@pytest.mark.parametrize("label", ["xj4k9qz2mwp7v1bt", "a1b2c3d4e5f6g7h8", "qwertyuiopasdfgh", "kq3vx8z0rn2w5y7t"])
def test_dga_high_entropy(label: str) -> None:
    assert _entropy(label) > 3.5
    assert dga_reason(label) == ENTROPY_REASON


def test_dga_consonants_when_entropy_is_low() -> None:
    label = "bcdbcdbcdbcdbcd"  # 15 consonants, entropy log2(3)
    assert _entropy(label) <= 3.5
    assert dga_reason(label) == CONSONANT_REASON
    assert dga_reason("bcdbcdbcd") is None  # exactly 9 consonants: not more than 9


def test_dga_entropy_boundary() -> None:
    # all-distinct labels have entropy log2(length): 10 chars give 3.32, 12 give 3.58
    assert dga_reason("aeiou01234") is None  # log2(10) = 3.32, no consonants
    assert dga_reason("aeiou0123456") == ENTROPY_REASON


@pytest.mark.parametrize("label", [
    "google", "facebook", "wikipedia", "example", "microsoft", "amazon", "cloudflare", "mail", "www", "a",
])
def test_dga_ordinary_labels(label: str) -> None:
    assert dga_reason(label) is None


def test_dga_needs_non_empty_label_without_dash() -> None:
    assert dga_reason("") is None
    assert dga_reason("xj4k9qz2-mwp7v1bt") is None
    assert dga_reason("bcdfghjklmnp-q") is None


# --- long domain ------------------------------------------------------------------------------


def test_long_domain_trail() -> None:
    label = "a" * 25
    assert long_domain_trail(f"{label}.com") == f"({label}).com"
    assert long_domain_trail(f"{label}.tunnel.evil.com") == f"({label}.tunnel).evil.com"
    assert long_domain_trail(f"{label}.evil.com") == f"({label}).evil.com"


def test_long_domain_negatives() -> None:
    assert long_domain_trail("a" * 24 + ".evil.com") is None  # not over 24
    assert long_domain_trail("a" * 20 + "-" + "b" * 20 + ".evil.com") is None  # dash in the first label
    assert long_domain_trail("x.evil-" + "a" * 30 + ".com") is None  # only the first label counts
    assert long_domain_trail("a" * 30 + ".blogspot.com") is None
    assert long_domain_trail("a" * 30) is None  # a single label
    assert long_domain_trail("www.example.com") is None


# --- DNS exhaustion ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("a.tunnel.com", ("tunnel.com", "a")),
    ("x.y.tunnel.com", ("tunnel.com", "x.y")),
    ("x.y.example.co.uk", ("example.co.uk", "x.y")),
    ("x.bbc.co.uk", ("bbc.co.uk", "x")),
    ("abc.example.com", ("example.com", "abc")),
    ("x.y.z.example.info", ("example.info", "x.y.z")),
    ("10-0-0-1.x.com", None),   # d-d-d-d hosts (reverse-DNS style)
    ("10-0-0.x.com", ("x.com", "10-0-0")),
    ("example.com", None), ("com", None),
])
def test_exhaustion_domain(name: str, expected: tuple[str, str] | None) -> None:
    assert exhaustion_domain(name) == expected


def test_exhaustion_three_labels_keep_two() -> None:
    # with exactly 3 labels the short second-level rule does not apply
    assert exhaustion_domain("www.co.uk") == ("co.uk", "www")


# --- DNSBL ------------------------------------------------------------------------------------


def test_dnsbl_shape() -> None:
    assert is_dnsbl_shaped("4.3.2.1.zen.spamhaus.org")
    assert is_dnsbl_shaped("255.0.0.127.bl.example")
    assert not is_dnsbl_shaped("256.0.0.127.bl.example")
    assert is_dnsbl_shaped("4.3.2.1.org")  # 5 labels are enough
    assert not is_dnsbl_shaped("4.3.2.x.zen.spamhaus.org")
    assert not is_dnsbl_shaped("4.3.2.1")
    assert not is_dnsbl_shaped("\u00b2.3.2.1.zen.spamhaus.org")  # non-ASCII digit


def test_dnsbl_trail() -> None:
    assert looks_like_dnsbl_trail("(1.2.3.4).zen.spamhaus.org") is False
    assert looks_like_dnsbl_trail("(1.2.3.4.dnsbl).example.org")
    assert looks_like_dnsbl_trail("(x).bl.spamcop.net")
    assert looks_like_dnsbl_trail("(x).b.barracudacentral.org") is False
    assert looks_like_dnsbl_trail("(x).blog.example.com") is False


# --- NXDOMAIN keys ----------------------------------------------------------------------------


def test_nx_keys() -> None:
    assert nx_keys("nx1.dgaparent.com") == ("nx1.dgaparent.com", "*.dgaparent.com")
    assert nx_keys("a.b.example.org") == ("a.b.example.org", "*.example.org")
    assert nx_keys("example.com") == ("example.com",)
    assert nx_keys("localhost") == ("localhost",)


# --- robustness -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_random_names_never_raise(name: str) -> None:
    reason = dga_reason(name)
    assert reason in (None, ENTROPY_REASON, CONSONANT_REASON)
    long_domain_trail(name)
    exhaustion_domain(name)
    is_dnsbl_shaped(name)
    looks_like_dnsbl_trail(name)
    assert nx_keys(name)[0] == name


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(["1", "255", "256", "0", "07", "a", "bl", "x1", "", "com", "\u0663"]), min_size=1,
                max_size=8).map(".".join))
def test_nx_shape_counted_is_nx_counted_with_nothing_listed(name: str) -> None:
    """The bulk path's shortcut for names none of whose suffixes is listed agrees with the rule."""
    assert nx_shape_counted(name) == nx_counted(name, lambda _: False, lambda _: False)
