"""Whitelist parsing and Maltrail's IP / domain whitelist tests (spec section 4.6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.trails.whitelist import Whitelist, WhitelistError


def _quad(text: str) -> int:
    a, b, c, d = (int(part) for part in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_parse_exact_entries_comments_and_blank_lines() -> None:
    whitelist = Whitelist.from_texts(["# comment\n\n  akamai.net  \n8.8.8.8\n   # indented comment\nlocal\n"])
    assert whitelist.exact == {"akamai.net", "8.8.8.8", "local"}
    assert whitelist.ranges4 == []


def test_inline_hash_is_not_a_comment() -> None:
    # Maltrail only skips lines starting with '#'; the rest of a line is the entry
    assert Whitelist.from_texts(["a.com # note\n"]).exact == {"a.com # note"}


def test_entries_keep_their_case() -> None:
    whitelist = Whitelist.from_texts(["E-X.not.fyi\n"])
    assert whitelist.exact == {"E-X.not.fyi"}
    assert not whitelist.is_domain_whitelisted("e-x.not.fyi")  # Maltrail lower-cases only the name


def test_cidr_lines_become_inclusive_ranges() -> None:
    whitelist = Whitelist.from_texts(["192.0.2.0/24\n10.0.0.0/8\n1.2.3.4/32\n"])
    assert whitelist.ranges4 == [  # sorted
        (_quad("1.2.3.4"), _quad("1.2.3.4")),
        (_quad("10.0.0.0"), _quad("10.255.255.255")),
        (_quad("192.0.2.0"), _quad("192.0.2.255")),
    ]
    assert whitelist.exact == set()


def test_unaligned_cidr_is_masked_to_its_network() -> None:
    assert Whitelist.from_texts(["192.0.2.77/24\n"]).ranges4 == [(_quad("192.0.2.0"), _quad("192.0.2.255"))]


def test_overlapping_duplicate_and_adjacent_ranges_are_merged() -> None:
    whitelist = Whitelist.from_texts(
        ["10.0.0.0/8\n10.0.0.0/8\n10.1.0.0/16\n", "11.0.0.0/8\n192.0.2.0/25\n192.0.2.128/25\n0.0.0.0/32\n"]
    )
    assert whitelist.ranges4 == [
        (0, 0),
        (_quad("10.0.0.0"), _quad("11.255.255.255")),
        (_quad("192.0.2.0"), _quad("192.0.2.255")),
    ]
    assert Whitelist.from_texts(["0.0.0.0/0\n8.8.8.0/24\n"]).ranges4 == [(0, 0xFFFFFFFF)]


def test_constructor_normalises_ranges() -> None:
    whitelist = Whitelist({"a.example"}, [(20, 30), (5, 9), (10, 12), (25, 40)])
    assert whitelist.ranges4 == [(5, 12), (20, 40)]
    assert whitelist.is_ip_whitelisted("0.0.0.12")
    assert not whitelist.is_ip_whitelisted("0.0.0.13")


@pytest.mark.parametrize("line", ["10.0.0.0/33", "300.0.0.0/8", "2001:db8::/32", "10.0.0/8", "10.0.0.0/x"])
def test_lines_that_are_not_ipv4_cidrs_are_exact_entries(line: str) -> None:
    whitelist = Whitelist.from_texts([line + "\n"])
    assert whitelist.exact == {line}
    assert whitelist.ranges4 == []


def test_from_files_merges_files(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.txt", "a.example\n10.0.0.0/8\n")
    second = _write(tmp_path / "b.txt", "b.example\n")
    whitelist = Whitelist.from_files([first, str(second)])
    assert whitelist.exact == {"a.example", "b.example"}
    assert whitelist.ranges4 == [(_quad("10.0.0.0"), _quad("10.255.255.255"))]


def test_missing_file_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "whitelist.txt"
    with pytest.raises(WhitelistError) as info:
        Whitelist.from_files([missing])
    message = str(info.value)
    assert str(missing) in message
    assert "not found" in message
    assert "\n" not in message


def test_undecodable_file_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "whitelist.txt"
    path.write_bytes(b"ok.example\n\xff\xfe\n")
    with pytest.raises(WhitelistError, match="unreadable") as info:
        Whitelist.from_files([path])
    assert "\n" not in str(info.value)


def test_default_is_the_bundled_whitelist() -> None:
    whitelist = Whitelist.default()
    assert {"localhost", "127.0.0.1", "::1", "local", "lan", "corp", "akamai.net", "8.8.8.8"} <= whitelist.exact
    assert whitelist.is_ip_whitelisted("35.190.247.1")  # 35.184.0.0/13 and 35.190.247.0/24
    assert whitelist.is_ip_whitelisted("17.1.2.3")  # 17.0.0.0/8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8.8.8.8", True),  # exact entry
        ("cdn.example", True),  # exact entries need not be addresses
        ("0.0.0.0", False),
        ("255.255.255.255", False),
        ("10.0.0.0", True),  # first address of the range
        ("10.255.255.255", True),  # last address of the range
        ("10.1.2.3", True),
        ("11.0.0.0", False),
        ("198.51.100.200", True),  # second range
        ("198.51.101.0", False),
        ("9.255.255.255", False),
        ("10.0.0.1.evil.com", False),  # only a bare dotted quad is range-tested
        ("10.0.0.1:80", False),
        ("10.0.0.256", False),  # not an address
        ("010.000.000.001", True),  # leading zeros read as decimal, like Maltrail's addr_to_int
        ("0010.0.0.1", False),  # more than three digits per octet is not a dotted quad
        ("sub.cdn.example", False),  # no parent walk in the IP test
        ("", False),
    ],
)
def test_is_ip_whitelisted(text: str, expected: bool) -> None:
    whitelist = Whitelist.from_texts(["8.8.8.8\ncdn.example\n10.0.0.0/8\n198.51.100.0/24\n"])
    assert whitelist.is_ip_whitelisted(text) is expected


def test_is_ip_whitelisted_without_ranges() -> None:
    whitelist = Whitelist.from_texts(["8.8.8.8\n"])
    assert whitelist.is_ip_whitelisted("8.8.8.8")
    assert not whitelist.is_ip_whitelisted("8.8.4.4")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("akamai.net", True),
        ("a.b.akamai.net", True),  # parent walk
        ("WWW.Akamai.NET", True),  # the name is lower-cased
        ("printer.local", True),  # 'local' whitelists the whole suffix
        ("local", True),
        ("notakamai.net", False),  # labels, not string suffixes
        ("akamai.net.evil.com", False),
        ("akamai.network", False),
        ("akamai.net:443", True),  # cut at the first character outside [A-Za-z0-9._-]
        ("akamai.net/path?x=1", True),
        ("evil.com/akamai.net", False),
        ("a_b-c.akamai.net", True),
        ("", False),
    ],
)
def test_is_domain_whitelisted(name: str, expected: bool) -> None:
    whitelist = Whitelist.from_texts(["akamai.net\nlocal\n"])
    assert whitelist.is_domain_whitelisted(name) is expected


def test_domain_test_walks_exact_entries_only() -> None:
    whitelist = Whitelist.from_texts(["10.0.0.0/8\n"])
    assert not whitelist.is_domain_whitelisted("10.1.2.3")
