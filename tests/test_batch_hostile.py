"""The batch parser on hostile input: random bytes, zero-length and cut packets on every link
type never raise, and whatever is not IP is never reported as IP."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.batch import SUPPORTED_LINKTYPES, among, parse_batch
from workers.match import checked_rows


def _batch(rng: np.random.Generator, n: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    caplen = rng.integers(0, max_len, n).astype(np.uint32)
    offsets = np.concatenate([[0], np.cumsum(caplen)[:-1]]).astype(np.uint32)
    meta = np.stack([np.zeros(n, np.uint32), np.zeros(n, np.uint32), offsets, caplen], axis=1)
    data = rng.integers(0, 256, int(caplen.sum()), dtype=np.uint8)
    return meta, data


@pytest.mark.parametrize("linktype", SUPPORTED_LINKTYPES)
@pytest.mark.parametrize("max_len", [1, 20, 70, 1500])
def test_random_bytes_never_raise(linktype: int, max_len: int) -> None:
    rng = np.random.default_rng(linktype * 1000 + max_len)
    for _ in range(20):
        meta, data = _batch(rng, 256, max_len)
        p = parse_batch(meta, data, linktype)
        assert p.n == 256
        rows, _ = checked_rows(p)
        assert (p.version[rows] != 0).all()
        assert not p.malformed[rows].any()  # a malformed packet is counted, never matched
        assert (p.payload_len >= 0).all()
        assert (p.payload_off[p.payload_len > 0] + p.payload_len[p.payload_len > 0]
                <= meta[p.payload_len > 0, 2].astype(np.int64) + meta[p.payload_len > 0, 3]).all()


def test_empty_batch_and_empty_data() -> None:
    meta = np.zeros((0, 4), dtype=np.uint32)
    assert parse_batch(meta, np.zeros(0, np.uint8), 1).n == 0
    meta = np.zeros((3, 4), dtype=np.uint32)
    p = parse_batch(meta, np.zeros(0, np.uint8), 1)
    assert p.n == 3 and not p.version.any()


def test_column_types_and_missing_values() -> None:
    """The documented column types; -1 marks a protocol or ICMP type that is not there."""
    rng = np.random.default_rng(7)
    meta, data = _batch(rng, 512, 120)
    p = parse_batch(meta, data, 1)
    for name in ("proto", "sport", "dport", "tcp_flags", "icmp_type"):
        assert getattr(p, name).dtype == np.int32, name
    assert p.src4.dtype == p.dst4.dtype == np.uint32
    assert (p.proto[p.version == 0] == -1).all()
    icmp = p.first_frag & ((p.proto == 1) | (p.proto == 58))
    assert (p.icmp_type[~icmp] == -1).all()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-5, 70)), st.sets(st.integers(-5, 70)))
def test_among_is_isin_for_sorted_keys(values: list[int], keys: set[int]) -> None:
    got = among(np.array(values, np.int64), np.array(sorted(keys), np.int64))
    assert got.tolist() == np.isin(values, list(keys)).tolist()
