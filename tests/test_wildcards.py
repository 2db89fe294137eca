"""`workers.wildcards`: searching only the patterns the prefilter names gives the combined
pattern's answer, match for match."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from workers.wildcards import WildcardMatcher

PATTERNS = [
    r"\b(atztds|mtxtds)[0-9a-z]+\.(world|xyz)",
    r"q(l|r)[0-9]{5,6}\.pw",
    r"byethost[0-9]+\.com",
    r"^[a-z]{1,3}\-leboncoin\.(com|info|me|top)$",
    r"^[a-z]{2}\-[a-z]{2,3}\.(top|club)$",
    r"(advert|\w{1,3}xspot|mailserv)[0-9][0-9a-z]+\.(com|club)",
    r"nklmtf[0-9][^.]*[0-9].t35.com",
    r"(?i:UPPER)[0-9]+\.net",
    r"a|b.example",
    r"(ab)?cd[0-9]\.org",
    r"x.y",
]


def _combined(name: str) -> tuple[int, str, int] | None:
    m = re.compile("|".join(f"(?P<g{i}>{p})" for i, p in enumerate(PATTERNS))).search(name)
    return None if m is None else (int(m.lastgroup[1:]), m.group(0), m.start())


NAMES = ["atztds123.xyz", "www.byethost42.com", "ab-leboncoin.top", "zz-abc.club", "qxxspot9a.club",
         "x.mailserv1z.com.evil", "nklmtf1abc2.t35.com", "upper7.net", "b.example", "abcd1.org", "xzy.net",
         "mtxtds9.world.byethost1.com", "clean.example.org", "byethost.com"]


def test_known_names_match_as_combined() -> None:
    matcher = WildcardMatcher(PATTERNS)
    for name in NAMES:
        got = matcher.search(name)
        assert (None if got is None else (got[0], got[1].group(0), got[1].start())) == _combined(name), name
    assert sum(matcher.search(n) is not None for n in NAMES) >= 10


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["atztds", "byethost", "1", "42", ".", "-", "com", "club", "xspot", "t35",
                                 "nklmtf", "leboncoin", "ab", "cd", "x", "y", "org", "top", "advert", "q",
                                 "l", "12345", "pw", "upper", "world"]), min_size=1, max_size=8))
def test_generated_names_match_as_combined(parts: list[str]) -> None:
    name = "".join(parts)
    got = WildcardMatcher(PATTERNS).search(name)
    assert (None if got is None else (got[0], got[1].group(0), got[1].start())) == _combined(name)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["atztds", "byethost", "1", "42", ".", "-", "com", "club", "xspot", "t35",
                                          "nklmtf", "leboncoin", "ab", "cd", "x", "y", "org", "top", "advert"]),
                         min_size=1, max_size=8).map("".join), max_size=20))
def test_many_names_in_one_scan_match_as_combined(names: list[str]) -> None:
    got = WildcardMatcher(PATTERNS).search_many(names)
    assert [None if (g := got.get(i)) is None else (g[0], g[1].group(0), g[1].start())
            for i in range(len(names))] == [_combined(n) for n in names]
