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
        # what `checked_rows` takes for granted: TCP flags only on TCP rows, an IP row's protocol a byte
        assert not p.tcp_flags[p.proto != 6].any()
        assert ((p.proto[p.version != 0] >= 0) & (p.proto[p.version != 0] <= 255)).all()
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


def _udp_frame(payload: bytes, ihl_words: int = 5) -> bytes:
    """Ethernet, IPv4 (options padded with NOPs to `ihl_words`), UDP 40000 -> 53."""
    options = b"\x01" * (ihl_words * 4 - 20)
    total = ihl_words * 4 + 8 + len(payload)
    ip = bytes((0x40 | ihl_words, 0)) + total.to_bytes(2, "big") + bytes(5) + b"\x11" + bytes(2)
    ip += bytes((10, 0, 0, 1, 10, 0, 0, 2)) + options
    udp = (40000).to_bytes(2, "big") + (53).to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big") + bytes(2)
    return bytes(12) + b"\x08\x00" + ip + udp + payload


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=80),
                          st.builds(_udp_frame, st.binary(max_size=6), st.integers(5, 7))), min_size=1, max_size=6),
       st.sampled_from(SUPPORTED_LINKTYPES))
def test_columns_do_not_depend_on_bytes_past_the_batch(frames: list[bytes], linktype: int) -> None:
    """Headers near the end of the batch data are read whole (records) or byte by byte: the
    same columns either way, so a packet's columns never depend on what follows the batch."""
    caplen = np.array([len(f) for f in frames], np.uint32)
    offsets = np.concatenate([[0], np.cumsum(caplen)[:-1]]).astype(np.uint32)
    meta = np.stack([np.zeros(len(frames), np.uint32), np.zeros(len(frames), np.uint32), offsets, caplen], axis=1)
    data = np.frombuffer(b"".join(frames), np.uint8)
    tight = parse_batch(meta, data, linktype)
    padded = parse_batch(meta, np.concatenate((data, np.full(64, data[-1] if len(data) else 0, np.uint8))),
                         linktype)
    for name in ("version", "malformed", "first_frag", "proto", "src4", "dst4", "v6_rows", "src6", "dst6",
                 "sport", "dport", "tcp_flags", "icmp_type", "payload_off", "payload_len"):
        assert getattr(tight, name).tolist() == getattr(padded, name).tolist(), name
