"""Capture files and live capture: pcap in both byte orders and both time resolutions, pcapng,
wire lengths, truncated files, clear errors, batching, and a real capture on the loopback."""

from __future__ import annotations

import gzip
import lzma
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine import pcapio
from engine.pcapio import CaptureError, LiveCapture, PcapWriter, read_batches, write_pcapng
from engine.pcapng import PcapngRecords

FRAMES = [bytes([i]) * (20 + i * 7) for i in range(50)]
TIMES = [1700000000 + i * 0.25 + 0.000001 * i for i in range(50)]


def _read_all(path: Path, max_packets: int = 4096) -> tuple[list[bytes], list[tuple[int, int]], list[int], int]:
    frames, stamps, wire, linktype = [], [], [], -1
    for b in read_batches(path, max_packets):
        linktype = b.linktype
        for (sec, usec, off, cap), w in zip(b.meta.tolist(), b.wirelen.tolist(), strict=True):
            frames.append(b.data[off : off + cap])
            stamps.append((sec, usec))
            wire.append(w)
    return frames, stamps, wire, linktype


def _expected_stamps() -> list[tuple[int, int]]:
    return [(int(t), round((t - int(t)) * 1e6)) for t in TIMES]


@pytest.mark.parametrize("nanosecond", [False, True])
def test_pcap_round_trip(tmp_path: Path, nanosecond: bool) -> None:
    path = tmp_path / "a.pcap"
    with PcapWriter(path, linktype=113, nanosecond=nanosecond) as w:
        for ts, frame in zip(TIMES, FRAMES, strict=True):
            w.write(frame, ts)
    frames, stamps, wire, linktype = _read_all(path, max_packets=7)  # several batches
    assert frames == FRAMES and linktype == 113
    assert stamps == _expected_stamps()
    assert wire == [len(f) for f in FRAMES]


@pytest.mark.parametrize("first", [0, 1, 3, 7, 60])
def test_a_small_first_batch(tmp_path: Path, first: int) -> None:
    """`first_packets` makes only the first batch smaller; the packets and their order stay."""
    path = tmp_path / "a.pcap"
    with PcapWriter(path, linktype=1) as w:
        for ts, frame in zip(TIMES, FRAMES, strict=True):
            w.write(frame, ts)
    batches = list(read_batches(path, 7, first))
    sizes = [len(b) for b in batches]
    assert sizes[0] == (min(first, 7) or 7) and all(size == 7 for size in sizes[1:-1]) and sum(sizes) == len(FRAMES)
    assert [bytes(b.data[off:off + cap]) for b in batches for _, _, off, cap in b.meta.tolist()] == FRAMES


def test_interrupt_while_reading_is_not_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C lands inside the length gather: the traceback keeps a view of what was read alive,
    and closing the reader must let the KeyboardInterrupt through (it once became a BufferError,
    when the file was mapped)."""
    path = tmp_path / "a.pcap"
    with PcapWriter(path, linktype=1) as w:
        for ts, frame in zip(TIMES, FRAMES, strict=True):
            w.write(frame, ts)

    def interrupted(self: pcapio._PcapLengths, stretch: np.ndarray, at: np.ndarray) -> np.ndarray:
        view = stretch[:8]
        assert view.base is not None
        raise KeyboardInterrupt

    monkeypatch.setattr(pcapio._PcapLengths, "_fields", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _read_all(path)


def test_big_endian_pcap(tmp_path: Path) -> None:
    path = tmp_path / "be.pcap"
    with open(path, "wb") as f:
        f.write(struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in zip(TIMES, FRAMES, strict=True):
            sec, usec = int(ts), round((ts - int(ts)) * 1e6)
            f.write(struct.pack(">IIII", sec, usec, len(frame), len(frame) + 100) + frame)
    frames, stamps, wire, _ = _read_all(path)
    assert frames == FRAMES and stamps == _expected_stamps()
    assert wire == [len(f) + 100 for f in FRAMES]


def test_wire_length_beyond_caplen(tmp_path: Path) -> None:
    path = tmp_path / "snap.pcap"
    with PcapWriter(path, snaplen=64) as w:
        for ts, frame in zip(TIMES, FRAMES, strict=True):
            w.write(frame[:64], ts, wirelen=len(frame))
    frames, _, wire, _ = _read_all(path)
    assert frames == [f[:64] for f in FRAMES]
    assert wire == [len(f) for f in FRAMES]


def test_records_longer_than_snaplen_still_give_wire_lengths(tmp_path: Path) -> None:
    path = tmp_path / "long.pcap"
    with PcapWriter(path, snaplen=100) as w:  # libpcap shortens records above the file's snaplen
        for ts, frame in zip(TIMES, FRAMES, strict=True):
            w.write(frame, ts, wirelen=len(frame) + 1)
    frames, _, wire, _ = _read_all(path)
    assert len(frames) == 50
    assert wire == [len(f) + 1 for f in FRAMES]


def test_pcapng(tmp_path: Path) -> None:
    path = tmp_path / "a.pcapng"
    write_pcapng(path, 276, zip(TIMES, FRAMES, strict=True))
    frames, stamps, wire, linktype = _read_all(path, max_packets=16)
    assert frames == FRAMES and linktype == 276
    assert stamps == _expected_stamps()
    assert wire == [len(f) for f in FRAMES]


def _ng_block(order: str, btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    size = struct.pack(f"{order}I", 12 + len(body))
    return struct.pack(f"{order}I", btype) + size + body + size


def _ng_section(order: str, snaplen: int) -> bytes:
    """A section header and one Ethernet interface, in `order`."""
    return (_ng_block(order, 0x0A0D0D0A, struct.pack(f"{order}IHHq", 0x1A2B3C4D, 1, 0, -1))
            + _ng_block(order, 1, struct.pack(f"{order}HHI", 1, 0, snaplen)))


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("max_packets", [1, 2, 4096])
def test_pcapng_wire_lengths_of_every_packet_block(tmp_path: Path, order: str, max_packets: int) -> None:
    """The original length of each kind of packet block, over two sections, in either byte order
    and in batches of any size: enhanced (captured shorter than sent), obsolete and simple blocks,
    the last so short that it ends the file less than 28 bytes after it starts."""
    frame = bytes(range(60))
    data = (_ng_section(order, 65535)
            + _ng_block(order, 6, struct.pack(f"{order}IIIII", 0, 0, 1_000_000, 60, 1500) + frame)
            + _ng_block(order, 2, struct.pack(f"{order}HHIIII", 0, 0, 0, 2_000_000, 60, 900) + frame)
            + _ng_section(order, 65535)
            + _ng_block(order, 6, struct.pack(f"{order}IIIII", 0, 0, 3_000_000, 60, 61) + frame)
            + _ng_block(order, 3, struct.pack(f"{order}I", 60) + frame)
            + _ng_block(order, 3, struct.pack(f"{order}I", 4) + frame[:4]))
    path = tmp_path / "blocks.pcapng"
    path.write_bytes(data)
    frames, stamps, wire, _ = _read_all(path, max_packets)
    assert [len(f) for f in frames] == [60, 60, 60, 60, 4]
    assert wire == [1500, 900, 61, 60, 4]
    assert stamps[:3] == [(1, 0), (2, 0), (3, 0)]


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_batches_hold_about_max_bytes(tmp_path: Path, kind: str) -> None:
    """After the first batch, libpcap is asked for as many packets as `max_bytes` holds at the
    mean size so far (a batch much bigger than a ring slot costs more a packet), never more
    than `max_packets`."""
    path = tmp_path / f"a.{kind}"
    frames = [bytes([i % 256]) * 1000 for i in range(1000)]
    if kind == "pcap":
        with PcapWriter(path) as w:
            for i, frame in enumerate(frames):
                w.write(frame, 1.0 + i / 1000)
    else:
        write_pcapng(path, 1, [(1.0 + i / 1000, frame) for i, frame in enumerate(frames)])
    sizes = [len(b) for b in read_batches(path, 4096, 10, max_bytes=100_000)]
    assert sizes == [10] + [100] * 9 + [90]
    assert [len(b) for b in read_batches(path, 50, 10, max_bytes=100_000)] == [10] + [50] * 19 + [40]
    assert [len(b) for b in read_batches(path, 4096)] == [1000]
    assert pcapio.next_count(4096, 100_000, 3, 1) == 4096 and pcapio.next_count(4096, 10, 3, 3000) == 1


def test_truncated_last_record_keeps_the_rest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cut.pcap"
    with PcapWriter(path) as w:
        for ts, frame in zip(TIMES, FRAMES, strict=True):
            w.write(frame, ts)
    path.write_bytes(path.read_bytes()[:-30])
    frames, _, _, _ = _read_all(path)
    assert frames == FRAMES[:-1]
    assert "truncated" in caplog.text


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_a_file_emptied_while_read_ends_the_read(tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str) -> None:
    """A file truncated to nothing between two batches (a writer after a replay let go of its
    lease): libpcap fails on a record it has begun, the packets after the last batch cannot be
    read one by one (the file no longer opens), and the read ends with a warning, not an error."""
    path = tmp_path / f"f.{kind}"
    frames = [bytes([i]) * (1000 + i) for i in range(60)]
    if kind == "pcap":
        with PcapWriter(path) as w:
            for i, frame in enumerate(frames):
                w.write(frame, 1.0 + i)
    else:
        write_pcapng(path, 1, [(1.0 + i, frame) for i, frame in enumerate(frames)])
    got = 0
    for n, batch in enumerate(read_batches(path, max_packets=2)):
        got += len(batch)
        if n == 0:
            path.write_bytes(b"")
    assert 2 <= got < 60
    assert "rest of the file ignored" in caplog.text


@pytest.mark.parametrize(("content", "message"), [
    (None, "capture file not found"),
    (b"", "empty file"),
    (b"hello, this is text\n", "not a pcap or pcapng file"),
    (gzip.compress(b"\xd4\xc3\xb2\xa1" + bytes(20)),
     r"x.pcap: gzip-compressed; decompress it first \(gunzip -c .*x.pcap > capture.pcap\)"),
    (b"BZh91AY&SY", "bzip2-compressed"),
    (lzma.compress(b"\xd4\xc3\xb2\xa1"), "xz-compressed"),
    (b"\x28\xb5\x2f\xfd\x00\x00", "zstd-compressed"),
])
def test_clear_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "x.pcap"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CaptureError, match=message):
        list(read_batches(path))


@pytest.mark.parametrize("interface", ["lo", "any"])
def test_live_capture(interface: str) -> None:
    port = 40000 + int(time.time() * 1000) % 20000
    try:
        cap = LiveCapture(interface, bpf=f"udp and dst port {port}", timeout_ms=50)
    except CaptureError as exc:
        pytest.skip(f"live capture not permitted here: {exc}")

    def send() -> None:
        time.sleep(0.3)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(20):
                s.sendto(b"probe-%d" % i, ("127.0.0.1", port))

    sender = threading.Thread(target=send)
    sender.start()
    got: list[bytes] = []
    deadline = time.monotonic() + 10
    for batch in cap.batches(64):
        for _, _, off, caplen in batch.meta.tolist():
            got.append(batch.data[off : off + caplen])
        assert np.array_equal(batch.wirelen, batch.meta[:, 3])
        if len(got) >= 20 or time.monotonic() > deadline:
            cap.stop()
    sender.join()
    recv, drop, _ = cap.stats()
    linktype = cap.linktype
    cap.close()
    assert linktype == (1 if interface == "lo" else 113)
    assert sorted(p[-len(b"probe-0"):] for p in got if p.endswith(b"probe-0")) == [b"probe-0"]
    assert len(got) == 20 and recv >= 20 and drop == 0


def test_live_capture_errors() -> None:
    with pytest.raises(CaptureError, match="no-such-if0"):
        LiveCapture("no-such-if0")
    try:
        cap = LiveCapture("lo")
    except CaptureError as exc:
        pytest.skip(f"live capture not permitted here: {exc}")
    cap.close()
    with pytest.raises(CaptureError, match="bad BPF filter"):
        LiveCapture("lo", bpf="this is not bpf")


def _libpcap_reading(path: Path) -> tuple[list[tuple[int, int, bytes, int]], str]:
    """What libpcap itself reads from a file, record by record: the reference for our walk."""
    import pcapy

    reader = pcapy.open_offline(str(path))
    out: list[tuple[int, int, bytes, int]] = []
    try:
        while True:
            hdr, data = reader.next()
            if hdr is None:
                return out, ""
            sec, usec = hdr.getts()
            out.append((sec % 2**32, usec, bytes(data), hdr.getlen()))  # pcapy gives a signed 32-bit second
    except pcapy.PcapError as exc:
        return out, str(exc)
    finally:
        reader.close()


def _random_pcap(rng: np.random.Generator, path: Path) -> None:
    """A classic pcap of any byte order, resolution, version and snaplen, records of any length
    (some above the snaplen, some beyond what libpcap accepts), maybe cut anywhere."""
    order = "<" if rng.random() < 0.5 else ">"
    nanosecond = rng.random() < 0.5
    major, minor = [(2, 4), (2, 4), (2, 3), (2, 2)][rng.integers(4)]
    snaplen = int(rng.choice([0, 40, 100, 1500, 65535, 262144, 300000]))
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = bytearray(struct.pack(f"{order}IHHiIII", magic, major, minor, 0, 0, snaplen, 1))
    big = rng.random() < 0.2  # past what one buffer of `fill` may hold
    for _ in range(int(rng.integers(500, 1500) if big else rng.integers(0, 40))):
        caplen = int(rng.choice([0, 1, 14, 60, 99, 100, 101, 1500, 3000]))
        if rng.random() < (0.001 if big else 0.03):
            caplen = 262145 + int(rng.integers(1000))
        wire = caplen + int(rng.integers(0, 3)) * int(rng.integers(0, 200))
        swap = (major, minor) < (2, 3) or ((major, minor) == (2, 3) and rng.random() < 0.3)
        first, second = (wire, caplen) if swap else (caplen, wire)
        sec, frac = int(rng.integers(0, 2**32)), int(rng.integers(0, 10**9 if nanosecond else 10**6))
        out += struct.pack(f"{order}IIII", sec, frac, first, second)
        out += rng.integers(0, 256, min(caplen, 4000), dtype=np.uint8).tobytes()
    if rng.random() < 0.4 and len(out) > 24:
        out = out[: int(rng.integers(24, len(out)))]
    path.write_bytes(bytes(out))


def _batches_any_way(rng: np.random.Generator, path: Path, reader: str
                     ) -> Iterator[tuple[np.ndarray, np.ndarray, memoryview | bytes]]:
    """`read_batches` (libpcap) of any batch size, `PcapRecords.fill` (a replay's reader) into
    buffers of any size a replay may hand it (a ring slot: at least `largest` bytes, maybe less
    than what was read ahead), or `PcapRecords.take` over a map of the file (a leased replay)."""
    if reader == "libpcap":
        for b in read_batches(path, int(rng.integers(1, 9))):
            yield b.meta, b.wirelen, b.data
        return
    records = pcapio.PcapRecords(path, 1)
    if reader == "mapped":
        assert records.map()
        content = path.read_bytes()
        while (taken := records.take(int(rng.integers(1, 50)))) is not None:
            meta, wirelen, used, at = taken
            yield meta, wirelen, content[at : at + used]
        records.close()
        return
    while True:
        buf = memoryview(bytearray(records.largest + int(rng.integers(0, 3 * records.largest))))
        taken = records.fill(buf, int(rng.integers(1, 50)))
        if taken is None:
            break
        yield taken[0], taken[1], buf
    records.close()


@pytest.mark.parametrize("reader", ["libpcap", "walk", "mapped"])
def test_every_reader_reads_what_libpcap_reads(tmp_path: Path, caplog: pytest.LogCaptureFixture, reader: str) -> None:
    """Random and damaged classic pcap files: the same packets, stamps and wire lengths as
    libpcap's own record-by-record reading, in batches of any size, and a warning exactly where
    libpcap stops with an error."""
    rng = np.random.default_rng(7)
    path = tmp_path / "r.pcap"
    for _ in range(300):
        _random_pcap(rng, path)
        expected, error = _libpcap_reading(path)
        caplog.clear()
        got = []
        for meta, wirelen, data in _batches_any_way(rng, path, reader):
            for (sec, usec, off, cap), wire in zip(meta.tolist(), wirelen.tolist(), strict=True):
                got.append((sec, usec, bytes(data[off : off + cap]), wire))
        assert got == expected
        assert ("rest of the file ignored" in caplog.text) == bool(error), (error, caplog.text)
        if error:
            assert f": {error} (rest" in caplog.text, (error, caplog.text)


def test_a_damaged_record_first_in_a_smaller_buffer_still_fails_the_file(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """What was read ahead may not fit a smaller next buffer; a damaged record at its start is
    reported there, not taken for the end of the file."""
    path = tmp_path / "d.pcap"
    with PcapWriter(path) as w:
        for i in range(700):
            w.write(bytes(1000), 1_700_000_000 + i)
    raw = bytearray(path.read_bytes())
    raw[24 + 300 * 1016 + 8 : 24 + 300 * 1016 + 12] = struct.pack("<I", 300_000)  # record 300 claims 300,000 bytes
    path.write_bytes(bytes(raw))
    records = pcapio.open_records(path)
    assert records is not None
    big = records.fill(memoryview(bytearray(700 * 1016)), 290)  # reads the whole file
    assert big is not None and len(big[0]) == 290
    small = memoryview(bytearray(records.largest))  # what was read ahead does not fit
    got = [len(t[0]) for t in iter(lambda: records.fill(small, 1000), None)]
    records.close()
    assert sum(got) == 10 and "invalid packet capture length 300000" in caplog.text


def test_who_reads_a_file(tmp_path: Path) -> None:
    """A replay maps a classic pcap file it can lease, whatever its records' size; without a lease
    it reads records big enough with `PcapRecords`, straight into its slots (one copy where libpcap
    makes two), small ones with libpcap, whose walk in C is then the cheaper part. pcapng is
    mapped (`PcapngRecords`) where it can be leased, else read into the slots by `PcapngRecords`
    too, whatever its blocks' size."""
    def pcap(name: str, size: int) -> Path:
        path = tmp_path / name
        with open(path, "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
            for _ in range(100):
                f.write(struct.pack("<IIII", 1, 2, size, size) + bytes(size))
        return path

    big = pcapio.open_records(pcap("big.pcap", 1400))
    assert isinstance(big, pcapio.PcapRecords)
    big.close()
    assert pcapio.open_records(pcap("small.pcap", 60)) is None
    for size in (60, 1400):
        mapped = pcapio.open_records(tmp_path / f"{'small' if size == 60 else 'big'}.pcap", map_file=True)
        assert isinstance(mapped, pcapio.PcapRecords) and mapped.mapped
        mapped.close()
    with open(tmp_path / "small.pcap", "ab"):  # being written: no lease
        assert pcapio.open_records(tmp_path / "small.pcap", map_file=True) is None
    for size in (60, 1400):
        write_pcapng(tmp_path / "a.pcapng", 1, [(1.0, bytes(size))] * 100)
        read = pcapio.open_records(tmp_path / "a.pcapng")
        assert isinstance(read, PcapngRecords) and not read.mapped
        read.close()
        ng = pcapio.open_records(tmp_path / "a.pcapng", map_file=True)
        assert isinstance(ng, PcapngRecords) and ng.mapped
        ng.close()
        with open(tmp_path / "a.pcapng", "ab"):
            read = pcapio.open_records(tmp_path / "a.pcapng", map_file=True)
            assert isinstance(read, PcapngRecords) and not read.mapped
            read.close()
