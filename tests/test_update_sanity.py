"""Sanity filters of `maltrail update`: Maltrail's bogon/CDN step and the per-source screening."""

from __future__ import annotations

import re

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from engine.trails.whitelist import Whitelist
from engine.update.sanity import AddressRanges, _leading_ip4, drop_in_ranges, drop_ranges, screen

# Maltrail's own definition of "starts with an IPv4 address"
LEADING = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?=$|[:/ ])")
TRICKY = ["1.2.3.4", "1.2.3.4:80", "1.2.3.4/x", "1.2.3.4 y", "1.2.3", "1.2.3.400", "1.2.3.4.5", "1.2.3.4x",
          "01.2.3.4", "1.2.3.0004", "1.2.3.4:80/a/b", "1.2.3.4:", "255.255.255.255:65535/zzzzzzzzzz",
          "100.206.219.177:54618", "100.134.172.105/", "1.2.3.4:abc", "9.9.9.9\u00e9", "", "1..2.3"]


def _maltrail(keys: list[str]) -> list[str]:
    return [k for k in keys if (m := LEADING.match(k)) and max(map(int, m.groups())) <= 255]


def test_leading_address_is_maltrails() -> None:
    found, addresses = _leading_ip4(TRICKY)
    assert found == _maltrail(TRICKY)
    assert set(addresses.tolist()) == {0x01020304, 0xFFFFFFFF, 0x64CEDBB1, 0x6486AC69}


@given(st.lists(st.text(alphabet="0123456789.:/ ax", max_size=24)))
def test_leading_address_matches_the_regex(keys: list[str]) -> None:
    found, addresses = _leading_ip4(keys)
    assert found == _maltrail(keys)
    assert addresses.tolist() == [int.from_bytes(bytes(map(int, LEADING.match(k).groups())), "big") for k in found]


def test_bogon_and_cdn_trails_are_dropped_unless_parking_or_sinkhole() -> None:
    trails = {"10.1.2.3": ("malware", "x"), "10.1.2.4:80": ("malware", "x"), "198.51.100.7/gate.php": ("malware", "x"),
              "240.0.0.1": ("malware", "x"), "10.9.9.9": ("sinkhole", "x"), "8.8.4.4.evil.example": ("malware", "x"),
              "91.240.118.7": ("malware", "x")}
    assert drop_in_ranges(trails, drop_ranges()) == 4
    assert set(trails) == {"10.9.9.9", "8.8.4.4.evil.example", "91.240.118.7"}


def test_ranges_cover_their_whole_prefix() -> None:
    ranges = AddressRanges.from_texts(["# x\n224.0.0.0/3\n10.0.0.0/8\n2001:db8::/32\n"])
    probe = np.array([0xE0000000, 0xFFFFFFFF, 0x0A000001, 0x0B000000, 0xDFFFFFFF], dtype=np.uint32)
    assert ranges.contains(probe).tolist() == [True, True, True, False, False]


def test_screen_counts_each_rule() -> None:
    rows = {"evil.example": ("m", "r"), "www.google.com": ("m", "r"), "co.uk": ("m", "r"), "github.io": ("m", "r"),
            "10.0.0.1": ("m", "r"), "127.0.0.9": ("m", "r"), "203.0.113.5:443": ("m", "r"),
            "192.0.2.1": ("parking site", "r"), "x.github.io": ("m", "r")}
    out = screen(rows, Whitelist({"google.com"}, [(0x0A000000, 0x0AFFFFFF)]))
    assert set(out.rows) == {"evil.example", "192.0.2.1", "x.github.io"}
    assert (out.whitelisted, out.public_suffix, out.bogon_cdn) == (3, 2, 1)
