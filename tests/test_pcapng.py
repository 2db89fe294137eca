"""pcapng replays read by `engine.pcapng.PcapngRecords` (the workers map the file, or without a
lease the blocks are read into the slots) must give what libpcap gives: every packet's bytes,
timestamp, captured and original length, in order, whatever the interfaces' timestamp resolutions
and offsets, the blocks between packets, new sections; and where a block is one that libpcap alone
judges (a Simple or obsolete Packet Block, a damaged or refused block, one longer than the slot),
libpcap reads on from it, so that even damaged files end where libpcap ends them."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pcapng_support import block, epb, idb, offset, option, resolution, shb

from engine import pcapio
from engine.pcapng import PcapngRecords

Packet = tuple[int, int, int, int, bytes]  # sec, usec, caplen, wire length, bytes


def _frames(count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, int(rng.integers(14, 1600)), dtype=np.uint8).tobytes() for _ in range(count)]


T0 = 1_700_000_000


def _plain(frames: list[bytes]) -> bytes:
    packets = [epb((T0 + i) * 10**6 + i * 37, f, wire=len(f) + i % 3) for i, f in enumerate(frames)]
    return shb() + idb() + b"".join(packets)


def _resolutions(frames: list[bytes]) -> bytes:
    """Four interfaces (nanoseconds with an offset before the epoch, milliseconds, 2^-20 s,
    seconds with an offset), packets on each in turn."""
    out = shb() + idb(options=resolution(9) + offset(-3600)) + idb(options=resolution(3))
    out += idb(options=resolution(0x80 | 20)) + idb(options=offset(5) + resolution(0))
    per = (10**9, 10**3, 1 << 20, 1)
    return out + b"".join(epb((T0 + i) * per[i % 4] + i * 7919 % per[i % 4], f, interface=i % 4)
                          for i, f in enumerate(frames))


def _blocks_between(frames: list[bytes]) -> bytes:
    """Name resolution, statistics, custom and decryption secrets blocks among the packets, and
    packets with options."""
    others = [block(4, b"\x01\x00\x08\x00" + bytes(8)), block(5, struct.pack("<III", 0, 1, 2)),
              block(0x00000BAD, b"\x00\x00\x7f\x00custom"), block(0x0A, b"TLSK" + bytes(4))]
    out = shb() + others[0] + idb(options=option(2, b"eth0") + option(1, b"a comment") + option(1, b"two"))
    for i, f in enumerate(frames):
        out += epb((T0 + i) * 10**6, f, options=option(1, b"hello") + option(0, b"") if i % 3 == 0 else b"")
        if i % 10 == 0:
            out += others[i // 10 % 4]
    return out


def _sections(frames: list[bytes]) -> bytes:
    """Interfaces added between packets, then a new section with its own interfaces."""
    half = len(frames) // 2
    out = shb() + idb()
    for i, f in enumerate(frames[:half]):
        out += epb((T0 + i) * 10**6, f, interface=0 if i < 10 else i % 2)
        if i == 9:
            out += idb(options=resolution(9))
    out += shb(minor=2) + idb(options=resolution(6) + offset(100)) + idb(options=resolution(3))
    return out + b"".join(epb((T0 + i) * 1000, f, interface=i % 2) for i, f in enumerate(frames[half:]))


def _packet_blocks(frames: list[bytes]) -> bytes:
    """A Simple and an obsolete Packet Block among Enhanced ones: libpcap reads on from the first."""
    out = shb() + idb()
    for i, f in enumerate(frames):
        if i == 40:
            out += block(3, struct.pack("<I", len(f)) + f)
        elif i == 41:
            out += block(2, struct.pack("<HHIIII", 0, 0, T0 >> 32, T0 & 0xFFFFFFFF, len(f), len(f)) + f)
        else:
            out += epb((T0 + i) * 10**6, f)
    return out


def _damaged(kind: str) -> Callable[[list[bytes]], bytes]:
    """Good packets, then one block libpcap refuses (or a file cut short), then more packets."""
    def build(frames: list[bytes]) -> bytes:
        good = [epb((T0 + i) * 10**6, f) for i, f in enumerate(frames)]
        f = frames[0]
        bad = {
            "trailer": epb(T0 * 10**6, f, trailer=999),
            "caplen_over_block": epb(T0 * 10**6, f, caplen=len(f) + 400),
            "caplen_over_snaplen": epb(T0 * 10**6, bytes(70000)),
            "unknown_interface": epb(T0 * 10**6, f, interface=3),
            "length_not_multiple_of_4": epb(T0 * 10**6, f)[:-4] + b"\0" * 2,
            "short_block": struct.pack("<II", 6, 8),
            "other_link_type": idb(linktype=113),
            "twice_a_resolution": idb(options=resolution(6) + resolution(9)),
            "bad_section": block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 2, 0, -1)),
        }
        if kind == "cut":
            return shb() + idb() + b"".join(good)[:-50]
        return shb() + idb() + b"".join(good[:30]) + bad[kind] + b"".join(good[30:])
    return build


FILES: dict[str, Callable[[list[bytes]], bytes]] = {
    "plain": _plain, "resolutions": _resolutions, "blocks_between": _blocks_between, "sections": _sections,
    "packet_blocks": _packet_blocks,
    **{f"damaged_{kind}": _damaged(kind) for kind in (
        "trailer", "caplen_over_block", "caplen_over_snaplen", "unknown_interface", "length_not_multiple_of_4",
        "short_block", "other_link_type", "twice_a_resolution", "bad_section", "cut")},
}
HANDED_OVER = {"packet_blocks"} | {name for name in FILES if name.startswith("damaged_")}


def _unpack(meta: np.ndarray, wire: np.ndarray, data: bytes | memoryview, base: int = 0) -> list[Packet]:
    return [(sec, usec, cap, w, bytes(data[base + off : base + off + cap]))
            for (sec, usec, off, cap), w in zip(meta.tolist(), wire.tolist(), strict=True)]


def _by_libpcap(path: Path, skip: int = 0, size: int = 64) -> list[Packet]:
    return [p for b in pcapio.read_batches(path, size, skip=skip) for p in _unpack(b.meta, b.wirelen, b.data)]


def _by_records(path: Path, count: int, mapped: bool = True, room: int = 0) -> tuple[list[Packet], bool]:
    """What the records give, then libpcap from where they hand over: mapped (`take`), or read
    into a slot of `largest` bytes plus `room` (`fill`)."""
    records = pcapio.open_records(path, map_file=mapped)
    assert isinstance(records, PcapngRecords) and records.mapped == mapped
    data = path.read_bytes()
    got: list[Packet] = []
    if mapped:
        while (taken := records.take(count)) is not None:
            meta, wire, used, at = taken
            assert used <= len(data) - at
            got += _unpack(meta, wire, data, at)
    else:
        slot = memoryview(bytearray(records.largest + room))
        while (filled := records.fill(slot, count)) is not None:
            meta, wire, used = filled
            assert used <= len(slot)
            got += _unpack(meta, wire, slot)
    assert records.delivered == len(got)
    if records.handed_over:
        got += _by_libpcap(path, skip=records.delivered)
    records.close()
    return got, records.handed_over


@pytest.mark.parametrize("mapped", [True, False], ids=["mapped", "read"])
@pytest.mark.parametrize("name", list(FILES))
def test_records_read_what_libpcap_reads(tmp_path: Path, name: str, mapped: bool) -> None:
    path = tmp_path / f"{name}.pcapng"
    path.write_bytes(FILES[name](_frames(120, seed=len(name))))
    expected = _by_libpcap(path)
    assert len(expected) >= (30 if name.startswith("damaged_") else 120)
    for count in (1, 7, 4096):
        for room in (0, 5000) if not mapped else (0,):  # a slot that holds one block or a few
            got, handed_over = _by_records(path, count, mapped, room)
            assert got == expected, (count, room)
            assert handed_over == (name in HANDED_OVER)


def test_a_block_longer_than_the_slot_is_libpcaps(tmp_path: Path) -> None:
    """A packet block with options that make it longer than the slot: libpcap reads on from it."""
    frames = _frames(6, seed=3)
    long_block = epb(T0 * 10**6, frames[2], options=option(1, b"x" * 65_000) * 5 + option(0, b""))
    path = tmp_path / "long.pcapng"
    path.write_bytes(shb() + idb() + b"".join(epb(T0 * 10**6, f) for f in frames[:2]) + long_block
                     + b"".join(epb(T0 * 10**6, f) for f in frames[3:]))
    expected = _by_libpcap(path)
    assert len(expected) == 6
    got, handed_over = _by_records(path, 4096, mapped=False)
    assert got == expected and handed_over
    assert _by_records(path, 4096) == (expected, False)  # mapped: a stretch as long as the block


def test_libpcap_reads_what_it_skips_in_any_batch_size(tmp_path: Path) -> None:
    """`read_batches(..., skip=n)` gives exactly the packets after the first n, whatever its batch
    size, and a damaged block's good neighbours as without `skip`."""
    path = tmp_path / "f.pcapng"
    path.write_bytes(_damaged("trailer")(_frames(80, seed=1)))
    every = _by_libpcap(path)
    for skip in (0, 1, 29, 30, 31):
        for size in (1, 4, 1000):
            assert _by_libpcap(path, skip=skip, size=size) == every[skip:]


def test_files_only_libpcap_reads(tmp_path: Path) -> None:
    """A big-endian file is libpcap's whole; a little-endian one that cannot be mapped is read
    into the slots."""
    frames = _frames(5, seed=2)
    path = tmp_path / "big.pcapng"
    path.write_bytes(shb(">") + idb(order=">") + b"".join(epb(T0 * 10**6, f, order=">") for f in frames))
    assert pcapio.open_records(path, map_file=True) is None
    assert len(_by_libpcap(path)) == 5
    little = tmp_path / "little.pcapng"
    little.write_bytes(_plain(frames))
    records = pcapio.open_records(little)  # not to be mapped
    assert isinstance(records, PcapngRecords) and not records.mapped
    records.close()
    with open(little, "ab"):  # held open for writing: no lease
        records = pcapio.open_records(little, map_file=True)
        assert isinstance(records, PcapngRecords) and not records.mapped
        records.close()
        assert _by_records(little, 4096, mapped=False)[0] == _by_libpcap(little)


def test_mutated_files_read_as_libpcap_reads_them(tmp_path: Path) -> None:
    """The sound files above with bytes changed at random (block types and lengths, interface
    fields and options, packet headers, trailers), each read as libpcap reads it."""
    rng = np.random.default_rng(7)
    names = [name for name in FILES if name not in HANDED_OVER]
    handed = 0
    compared = 0
    for n in range(400):
        name = names[n % len(names)]
        raw = bytearray(FILES[name](_frames(40, seed=n)))
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(28, min(len(raw), 600))) if rng.random() < 0.6 else int(rng.integers(28, len(raw)))
            raw[at] = int(rng.integers(0, 256)) if rng.random() < 0.7 else raw[at] ^ (1 << int(rng.integers(0, 8)))
        path = tmp_path / f"m{n}.pcapng"
        path.write_bytes(bytes(raw))
        try:
            expected = _by_libpcap(path)
        except pcapio.CaptureError:  # libpcap refuses the file's first blocks: not a replay to compare
            continue
        got, handed_over = _by_records(path, int(rng.choice([1, 3, 4096])), mapped=n % 2 == 0, room=n % 3 * 2000)
        assert got == expected, (n, name)
        compared += 1
        handed += handed_over
    assert compared > 300 and 10 < handed < compared  # most compared, some handed to libpcap
