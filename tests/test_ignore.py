"""Ignore-event rules (spec section 4.5): parsing and matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.trails.ignore import IgnoreRules, IgnoreRulesError


def test_parse_removes_all_whitespace_and_skips_comments() -> None:
    rules = IgnoreRules.from_texts(
        ["# header\n\n 192.168.0.3 ; * ;\t* ; * \n   # indented comment\n*;*;*;2 2\n"]
    )
    assert rules.rules == [("192.168.0.3", "*", "*", "*"), ("*", "*", "*", "22")]


@pytest.mark.parametrize("line", ["1.2.3.4;*;*", "1.2.3.4;*;*;*;*", "no separators", ";;", "#1.2.3.4;*;*;*"])
def test_lines_without_exactly_three_separators_are_ignored(line: str) -> None:
    assert IgnoreRules.from_texts([line + "\n"]).rules == []


def test_duplicate_rules_are_kept_once() -> None:
    rules = IgnoreRules.from_texts(["*;*;*;22\n", "* ; * ; * ; 22\n"])
    assert rules.rules == [("*", "*", "*", "22")]


def test_empty_fields_are_exact_empty_strings() -> None:
    rules = IgnoreRules.from_texts([";;;\n"])
    assert rules.rules == [("", "", "", "")]
    assert rules.matches("", "", "", "")
    assert not rules.matches("1.2.3.4", 1, "5.6.7.8", 2)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (("192.168.0.3", 1234, "8.8.8.8", 53), True),  # source rule
        (("192.168.0.30", 1234, "8.8.8.8", 53), False),  # exact string, not a prefix
        (("10.0.0.1", 5555, "10.0.0.2", 22), True),  # destination port as int
        (("10.0.0.1", "5555", "10.0.0.2", "22"), True),  # destination port as text
        (("10.0.0.1", 5555, "10.0.0.2", 2222), False),
        (("10.0.0.1", 22, "10.0.0.2", 80), False),  # port 22 on the wrong side
        (("10.0.0.5", 1000, "203.0.113.9", 443), True),  # all four fields
        (("10.0.0.5", 1001, "203.0.113.9", 443), False),
        (("10.0.0.9", None, "203.0.113.1", None), True),  # ICMP: ports logged as '-'
        (("10.0.0.9", 0, "203.0.113.1", 0), False),
    ],
)
def test_matches(event: tuple[str, int | str | None, str, int | str | None], expected: bool) -> None:
    rules = IgnoreRules.from_texts(
        ["192.168.0.3;*;*;*\n*;*;*;22\n10.0.0.5;1000;203.0.113.9;443\n10.0.0.9;-;*;-\n"]
    )
    assert rules.matches(*event) is expected


def test_no_rules_match_nothing() -> None:
    assert not IgnoreRules().matches("1.2.3.4", 1, "5.6.7.8", 2)


def test_default_is_the_bundled_file_which_only_has_examples() -> None:
    rules = IgnoreRules.default()
    assert rules.rules == []  # the examples in data/ignore_events.txt are commented out
    assert not rules.matches("192.168.0.3", 1, "8.8.8.8", 22)


def test_from_files_merges_files(tmp_path: Path) -> None:
    first = tmp_path / "a.txt"
    first.write_text("*;*;*;22\n", encoding="utf-8")
    second = tmp_path / "b.txt"
    second.write_text("10.0.0.1;*;*;*\n*;*;*;22\n", encoding="utf-8")
    rules = IgnoreRules.from_files([first, str(second)])
    assert rules.rules == [("*", "*", "*", "22"), ("10.0.0.1", "*", "*", "*")]


def test_missing_file_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "ignore.txt"
    with pytest.raises(IgnoreRulesError) as info:
        IgnoreRules.from_files([missing])
    message = str(info.value)
    assert str(missing) in message
    assert "not found" in message
    assert "\n" not in message
