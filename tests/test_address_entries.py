"""`PayloadInspector._address_entries` (the trail entries of each payload row's destination, source
and destination:port) against one lookup per side, on batches that mix IPv4 and IPv6 rows with
listed and unlisted addresses: its shortcuts (no IPv4 lookups when the prefilter passes no
address, the IPv6 sides in one lookup) must give the same entries."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from index_support import index_file

from engine import traffic as t
from engine.index.mapped import TrailIndex
from workers.batch import Parsed, parse_batch
from workers.payload import DetectionSettings, PayloadInspector

_LISTED = {"203.0.113.44": "ip", "198.51.100.0/24": "range", "192.0.2.80:53": "ip:port", "2001:db8::44": "ip6",
           "[2001:db8::80]:53": "ip6:port"}
TRAILS = {trail: (f"malware ({kind})", "(static)") for trail, kind in _LISTED.items()}
V4 = ("203.0.113.44", "198.51.100.7", "192.0.2.80", "192.0.2.81", "10.0.0.7")  # listed, ranged, port, near, not
V6 = ("2001:db8::44", "2001:db8::80", "2001:db8::99")


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> TrailIndex:
    return TrailIndex(index_file(TRAILS, tmp_path_factory.mktemp("entries")))


def _one_by_one(ix: TrailIndex, p: Parsed, rows: np.ndarray) -> list[tuple[int, int, int]]:
    """The entries of each row from lookups of that row's sides alone."""
    out = []
    for r in rows.tolist():
        if p.version[r] == 4:
            dst, src = p.dst4[r : r + 1], p.src4[r : r + 1]
            out.append((int(ix.lookup_ip4(dst)[0]), int(ix.lookup_ip4(src)[0]),
                        int(ix.lookup_ip4port(dst, p.dport[r : r + 1].astype(np.uint32))[0])))
        else:
            pos = p.v6_rows.searchsorted(r)
            dst, src = p.dst6[pos : pos + 1], p.src6[pos : pos + 1]
            out.append((int(ix.lookup_ip6(dst)[0]), int(ix.lookup_ip6(src)[0]),
                        int(ix.lookup_ip6port(dst, p.dport[r : r + 1].astype(np.uint16))[0])))
    return out


_row = st.one_of(st.tuples(st.just(4), st.sampled_from(V4), st.sampled_from(V4), st.sampled_from((53, 443))),
                 st.tuples(st.just(6), st.sampled_from(V6), st.sampled_from(V6), st.sampled_from((53, 443))))


@settings(max_examples=150, deadline=None)
@given(st.lists(_row, min_size=1, max_size=10))
def test_entries_match_one_lookup_per_side(index: TrailIndex, specs: list) -> None:
    frames = [t.ethernet((t.udp4 if version == 4 else t.udp6)(src, dst, 40000, dport, t.dns_query("a.example")))
              for version, src, dst, dport in specs]
    meta, data = t.frames_batch(frames)
    p = parse_batch(meta, data, 1)
    rows = np.arange(len(frames), dtype=np.int64)
    inspector = PayloadInspector(index, DetectionSettings())
    dst, src, dport = inspector._address_entries(p, rows)
    assert list(zip(dst.tolist(), src.tolist(), dport.tolist(), strict=True)) == _one_by_one(index, p, rows)


def test_every_kind_of_listing_is_found(index: TrailIndex) -> None:
    """One row per listing, among unlisted IPv4 and IPv6 rows: each side reports its trail."""
    frames = [t.ethernet(t.udp4("10.0.0.7", dst, 40000, 53, b"x")) for dst in V4]
    frames += [t.ethernet(t.udp6("2001:db8::99", dst, 40000, 53, b"x")) for dst in V6]
    frames.append(t.ethernet(t.udp4("203.0.113.44", "10.0.0.8", 40000, 53, b"x")))
    meta, data = t.frames_batch(frames)
    p = parse_batch(meta, data, 1)
    dst, src, dport = PayloadInspector(index, DetectionSettings())._address_entries(p, np.arange(len(frames)))
    keys = [[index.key(e) if e >= 0 else None for e in col.tolist()] for col in (dst, src, dport)]
    assert keys[0] == ["203.0.113.44", "198.51.100.0/24", None, None, None, "2001:db8::44", None, None, None]
    assert keys[1] == [None] * 8 + ["203.0.113.44"]
    assert keys[2] == [None, None, "192.0.2.80:53", None, None, None, "[2001:db8::80]:53", None, None]
