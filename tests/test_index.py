"""The trail index: every key kind, precedence of exact over range and narrow over wide ranges,
hash collisions never matching, atomic publication, and the full static trail set at scale."""

from __future__ import annotations

import csv
import os
import random
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from fullscale import static_set

from engine.index.build import (
    _IP4ISH,
    IndexBuildError,
    _text_arena,
    build_index_file,
    compile_index,
    flatten_ranges,
)
from engine.index.fileformat import IndexFormatError, map_arrays, write_arrays
from engine.index.ip4columns import ip4_columns
from engine.index.mapped import TrailIndex
from engine.index.schema import K_IP4, K_IP4PORT, STRING_PREFILTER_BITS
from engine.ipaddr import ip6_text, parse_ip4, parse_ip_port

TRAILS = {
    "evil.com": ("malware (x)", "(static)"),
    "sub.evil-parent.com": ("sub (x)", "(static)"),
    "evil-parent.com": ("parent (x)", "(static)"),
    "1.2.3.4": ("attacker", "(static)"),
    "6.6.6.6:8443": ("ipport (x)", "(static)"),
    "dead::beef": ("v6 (x)", "(static)"),
    "[dead::beef]:443": ("v6port (x)", "(static)"),
    "10.0.0.0/8": ("wide range", "(static)"),
    "10.1.0.0/16": ("narrow range", "(static)"),
    "10.1.2.3": ("exact inside range", "(static)"),
    "2001:db8::/32": ("v6 range", "(static)"),
    "/malicious-login.php": ("path (x)", "(static)"),
    "evil-url.example/bad/path": ("url (x)", "(static)"),
    "ua:evilbot/1.0": ("bad ua", "(static)"),
    r"dga[0-9]+\.wildcard-test\.com": ("dga (x)", "(static)"),
}
WILDCARDS = [(r"dga[0-9]+\.wildcard-test\.com", "dga (x)", "(static)")]


def _index(tmp_path: Path, hash_bits: int = 64, trails: dict | None = None) -> TrailIndex:
    arrays, meta = compile_index(trails or TRAILS, ["8.8.8.8", "google.com"], [(0x01010100, 0x010101FF)],
                                 WILDCARDS, hash_bits=hash_bits)
    path = tmp_path / f"t{hash_bits}.mtidx"
    write_arrays(path, arrays, meta)
    return TrailIndex(path)


CASES = [
    ("evil.com", "evil.com", "malware (x)"),
    ("WWW.Evil.Com", "evil.com", "malware (x)"),
    ("a.b.evil.com", "evil.com", "malware (x)"),
    ("x.sub.evil-parent.com", "sub.evil-parent.com", "sub (x)"),
    ("other.evil-parent.com", "evil-parent.com", "parent (x)"),
    ("1.2.3.4", "1.2.3.4", "attacker"),
    ("1.2.3.4:80", "1.2.3.4", "attacker"),
    ("6.6.6.6:8443", "6.6.6.6:8443", "ipport (x)"),
    ("dead::beef", "dead::beef", "v6 (x)"),
    ("DEAD:0:0::BEEF", "dead::beef", "v6 (x)"),
    ("[dead::beef]:443", "[dead::beef]:443", "v6port (x)"),
    ("[dead::beef]:80", "dead::beef", "v6 (x)"),
    ("10.2.3.4", "10.0.0.0/8", "wide range"),
    ("10.1.9.9", "10.1.0.0/16", "narrow range"),
    ("10.1.2.3", "10.1.2.3", "exact inside range"),
    ("10.1.0.0/16", "10.1.0.0/16", "narrow range"),
    ("2001:db8:1::5", "2001:db8::/32", "v6 range"),
    ("/malicious-login.php", "/malicious-login.php", "path (x)"),
    ("http://victim.example/malicious-login.php", "/malicious-login.php", "path (x)"),
    ("evil-url.example/bad/path", "evil-url.example/bad/path", "url (x)"),
    ("ua:evilbot/1.0", "ua:evilbot/1.0", "bad ua"),
    ("dga1234.wildcard-test.com", r"dga[0-9]+\.wildcard-test\.com", "dga (x)"),
]
MISSES = ["notevil.com", "evil.co", "vil.com", "1.2.3.5", "6.6.6.6:8444", "11.0.0.1", "dead::bee0",
          "2001:db9::1", "/malicious-login.phpx", "ua:evilbot/1.1", "dga.wildcard-test.com", "8.8.8.8"]


@pytest.mark.parametrize("hash_bits", [64, 3])  # 3 bits: almost every string collides
def test_every_kind_found_with_its_info(tmp_path: Path, hash_bits: int) -> None:
    ix = _index(tmp_path, hash_bits)
    for query, trail, info in CASES:
        r = ix.check(query)
        assert (r.found, r.trail, r.info, r.reference) == (True, trail, info, "(static)"), query
    for query in MISSES:
        assert not ix.check(query).found, query


def test_indexes_with_a_one_probe_string_prefilter_still_find_everything(tmp_path: Path) -> None:
    """Indexes from before the two-probe string prefilter carry one bit per key and no
    `string_prefilter_probes`: readers test the one bit only."""
    out = tmp_path / "old.mtidx"
    keys = [f"old-{i}.example.org/p?x={i}" for i in range(5000)]
    (tmp_path / "trails.csv").write_text("".join(f"{k},malware,static\n" for k in keys))
    build_index_file([str(tmp_path / "trails.csv")], out, default_whitelist=False)
    arrays, meta, mm = map_arrays(out)
    old = {name: np.array(a) for name, a in arrays.items()}
    del arrays
    mm.close()
    bits = np.zeros(1 << STRING_PREFILTER_BITS, dtype=bool)
    bits[(old["str_hash"] & np.uint64((1 << STRING_PREFILTER_BITS) - 1)).astype(np.int64)] = True
    old["str_pf"] = np.packbits(bits, bitorder="little")
    del meta["string_prefilter_probes"]
    write_arrays(out, old, meta)
    ix = TrailIndex(out)
    assert all(ix.lookup_string(k) >= 0 for k in keys)
    assert ix.string_maybe_positions(keys) == list(range(len(keys)))
    assert ix.strings_maybe(ix.hash_keys(keys)).all()
    assert ix.lookup_string("old-1.example.org/p?x=2") < 0


def test_indexes_without_the_url_host_table_hash_every_hosts_url_keys(tmp_path: Path) -> None:
    """`url_host_hash` holds the host part of every string trail with one (not of a path trail);
    indexes built before it load and answer True for every host."""
    out = tmp_path / "ix.mtidx"
    (tmp_path / "trails.csv").write_text("evil.example/x/y.php,malware,static\n/only/path,malware,static\n"
                                         "host.example:8080/a,malware,static\nplain.example,malware,static\n")
    build_index_file([str(tmp_path / "trails.csv")], out, default_whitelist=False)
    hosts = ["evil.example", "host.example:8080", "host.example", "plain.example", "", "only"]
    assert TrailIndex(out).url_hosts_maybe(hosts).tolist() == [True, True, False, False, False, False]
    arrays, meta, mm = map_arrays(out)
    old = {name: np.array(a) for name, a in arrays.items() if name != "url_host_hash"}
    del arrays
    mm.close()
    write_arrays(out, old, meta)
    ix = TrailIndex(out)
    assert ix.url_hosts_maybe(hosts).all()
    assert ix.lookup_string("evil.example/x/y.php") >= 0


def test_two_probe_string_prefilter_lets_few_misses_through(tmp_path: Path) -> None:
    keys = [f"k{i}.example.net" for i in range(200_000)]
    (tmp_path / "trails.csv").write_text("".join(f"{k},malware,static\n" for k in keys))
    build_index_file([str(tmp_path / "trails.csv")], tmp_path / "ix.mtidx", default_whitelist=False)
    ix = TrailIndex(tmp_path / "ix.mtidx")
    assert ix.string_maybe_positions(keys[::10]) == list(range(len(keys[::10])))
    misses = [f"m{i}.example.net" for i in range(100_000)]
    one_bit = (1 - np.exp(-len(keys) / (1 << STRING_PREFILTER_BITS)))  # what a single probe would pass
    assert len(ix.string_maybe_positions(misses)) < 0.5 * one_bit * len(misses)


def test_forced_hash_collision_never_matches(tmp_path: Path) -> None:
    ix = _index(tmp_path, hash_bits=1)  # two hash values for all strings
    assert ix.lookup_string("evil.com") >= 0
    for i in range(2000):
        assert ix.lookup_string(f"clean{i}.example") == -1


def test_batch_ip_lookups_match_single_lookups(tmp_path: Path) -> None:
    ix = _index(tmp_path)
    ips = np.array([parse_ip4(x) for x in ("1.2.3.4", "10.1.2.3", "10.1.7.7", "10.200.0.1", "9.9.9.9",
                                           "6.6.6.6")], dtype=np.uint32)
    got = [ix.key(e) if e >= 0 else None for e in ix.lookup_ip4(ips)]
    assert got == ["1.2.3.4", "10.1.2.3", "10.1.0.0/16", "10.0.0.0/8", None, None]
    ports = np.array([1, 1, 1, 1, 1, 8443], dtype=np.uint32)
    assert ix.key(int(ix.lookup_ip4port(ips, ports)[5])) == "6.6.6.6:8443"
    v6 = np.array([socket.inet_pton(socket.AF_INET6, a) for a in ("dead::beef", "2001:db8::1", "::1")], "S16")
    assert [int(e) >= 0 for e in ix.lookup_ip6(v6)] == [True, True, False]
    assert ix.key(int(ix.lookup_ip6port(v6[:1], np.array([443], np.uint16))[0])) == "[dead::beef]:443"


def test_whitelist_lookups(tmp_path: Path) -> None:
    ix = _index(tmp_path)
    assert ix.is_whitelisted_ip("8.8.8.8") and ix.is_whitelisted_ip("1.1.1.200")
    assert not ix.is_whitelisted_ip("1.1.2.1")
    assert ix.is_whitelisted_domain("mail.google.com") and not ix.is_whitelisted_domain("google.co")


def test_flatten_ranges_narrowest_wins() -> None:
    assert flatten_ranges([(0, 99, 1), (10, 19, 2), (15, 30, 3)]) == [
        (0, 9, 1), (10, 19, 2), (20, 30, 3), (31, 99, 1)]


def test_empty_trail_set_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IndexBuildError, match="no trails"):
        compile_index({})


def test_not_an_index_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.mtidx"
    bad.write_text("evil.com,malware,(static)\n")
    with pytest.raises(IndexFormatError, match="not a trail index"):
        TrailIndex(bad)


def test_publication_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays, meta = compile_index(TRAILS)
    out = tmp_path / "idx.mtidx"
    write_arrays(out, dict(arrays), meta)
    before = out.read_bytes()

    def boom(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        write_arrays(out, dict(arrays), {**meta, "x": 1})
    assert out.read_bytes() == before  # last good index untouched
    assert [p.name for p in tmp_path.iterdir()] == ["idx.mtidx"]  # no temporary left


def test_ipv6_rendering_follows_maltrail() -> None:
    def render(text: str) -> str:
        return ip6_text(socket.inet_pton(socket.AF_INET6, text))

    assert render("::") == "::0"
    assert render("1::") == "1::0"
    assert render("2001:db8:0:0:1::") == "2001:db8::1:0:0:0"
    assert render("1:0:0:2:0:0:0:3") == "1:0:0:2::3"
    assert render("dead::beef") == "dead::beef"


@pytest.mark.slow
def test_full_static_trail_set(tmp_path: Path) -> None:
    static = static_set()
    from engine.resources import data_file
    from engine.trails.sources import load_sources
    from engine.trails.whitelist import Whitelist

    out = tmp_path / "static.mtidx"
    started = time.perf_counter()
    meta = build_index_file([str(static)], out)
    build_seconds = time.perf_counter() - started
    started = time.perf_counter()
    ix = TrailIndex(out)
    map_seconds = time.perf_counter() - started
    print(f"\nfull static set: {meta['counts']}, build {build_seconds:.2f} s, map {map_seconds:.4f} s, "
          f"file {out.stat().st_size / 1e6:.1f} MB")
    trails = load_sources([str(static)], Whitelist.from_files([data_file("whitelist.txt")]))
    assert len(ix) == len(trails) > 1_000_000
    equivalent_csv = tmp_path / "trails.csv"
    with open(equivalent_csv, "w", newline="") as f:
        csv.writer(f).writerows([key, info, ref] for key, (info, ref) in trails.items())
    assert out.stat().st_size <= equivalent_csv.stat().st_size

    # Every row is found with its own info and reference.
    for e, key in enumerate(trails):
        assert ix.key(e) == key
    ip4_rows = [(e, parse_ip4(k)) for e, k in enumerate(trails) if parse_ip4(k) is not None]
    got = ix.lookup_ip4(np.array([ip for _, ip in ip4_rows], dtype=np.uint32))
    assert np.array_equal(got, np.array([e for e, _ in ip4_rows], dtype=np.int32))
    keys = list(trails)
    for e in range(len(trails)):
        if int(ix.entry_kind[e]) == 0:
            assert ix.lookup_string(keys[e]) == e
    for key in random.Random(3).sample(keys, 3000):
        info, ref = trails[key]
        r = ix.check(key)
        assert (r.found, r.info, r.reference) == (True, info, ref), key

    # A million random non-trails are not found.
    rng = np.random.default_rng(11)
    ips = rng.integers(0, 2**32, 1_000_000, dtype=np.uint64).astype(np.uint32)
    listed = set(ip for _, ip in ip4_rows)
    hits = ix.lookup_ip4(ips)
    for ip, e in zip(ips.tolist(), hits.tolist(), strict=True):
        if e >= 0:
            assert ip in listed or int(ix.entry_kind[e]) == 5  # exact trail or listed range
    words = random.Random(5)
    for _ in range(200_000):
        name = "".join(words.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(14)) + ".zz-test"
        assert ix.lookup_string(name) == -1


IP4_SPELLINGS = ["1.2.3.4", "010.001.002.003", "1.2.3.4:0080", "1.2.3.256", "1.2.3.4:65536", "1.2.3.4:65535",
                 "[dead::beef]:443", "1::2", "1.2.3.4.5", "1.2.3", "01.2.3.4:80", "1.2.3.4:", ":80", "1.2.3.4:80:90",
                 "1..2.3", ".1.2.3", "1.2.3.4/24", "1.2.3.4:00000000000080", "255.255.255.255:65535", "0.0.0.0:0",
                 "1.2.3.4:8a", "1234.2.3.4", "1.2.3.4 ", "a1.2.3.4", "1.2.3.4:+80", "1.2.3.4:٣",
                 "1.2\x00.3.4",
                 "1.2.3.4\x00", "9.9.9.9:1", "1.2.3.4:0000000000000000080", "1.2.3.4:99999999999"]


def test_ip4_columns_parse_like_parse_ip4_and_parse_ip_port() -> None:
    """The array parser of compile_index claims a key only where the one-by-one parsers give the same answer."""
    arena, offsets = _text_arena(IP4_SPELLINGS)
    starts = offsets[:-1].astype(np.int64)
    kinds, values = ip4_columns(arena, starts, np.diff(offsets).astype(np.int64))
    for key, kind, value in zip(IP4_SPELLINGS, kinds.tolist(), values.tolist(), strict=True):
        ip = parse_ip4(key) if _IP4ISH.fullmatch(key) else None
        ip_port = parse_ip_port(key) if ip is None else None
        if kind == K_IP4:
            assert ip == value, key
        elif kind == K_IP4PORT:
            assert ip_port is not None and ip_port[0] << 16 | ip_port[1] == value, key
        else:  # left to the one-by-one parsers: not an IPv4 spelling, non-ASCII or longer than 21 characters
            assert ip is None and (ip_port is None or not isinstance(ip_port[0], int) or len(key) > 21
                                   or not key.isascii()), key
    assert int((kinds != 0).sum()) == 8  # the canonical spellings are all claimed


def test_address_spellings_index_like_one_by_one(tmp_path: Path) -> None:
    """Equal addresses spelled differently keep entry order among equal keys; every kind is counted."""
    trails = {key: (f"info {i}", "(static)") for i, key in enumerate(["9.9.9.9", "009.9.9.9", "9.9.9.9:80",
                                                                      "9.9.9.9:0080", "[dead::beef]:1", "10.0.0.0/8"])}
    arrays, meta = compile_index(trails)
    assert arrays["ip4_entry"].tolist() == [0, 1] and arrays["ip4p_entry"].tolist() == [2, 3]
    assert meta["counts"] | {"whitelist": 0} == {"entries": 6, "ip4": 2, "ip4port": 2, "ip6": 0, "ip6port": 1,
                                                 "cidr4": 1, "cidr6": 0, "strings": 1, "certificates": 0,
                                                 "whitelist": 0, "wildcards": 0}


def test_empty_key_is_refused() -> None:
    with pytest.raises(IndexBuildError, match="empty"):
        compile_index({"": ("x", "(static)"), "a.example": ("x", "(static)")})
