"""Capture input and output: pcap/pcapng files and live interfaces in batches, pcap writing.

pcapy-ng opens every capture (it checks the file header and names the link type). Classic pcap
records are then walked over a map of the file: a batch is a view of the map, copied once, into
a ring slot. pcapng and live capture go through pcapy-ng's `next_batch`, which returns many
packets per call (sec, usec, offset, caplen) but not the original wire length: for pcapng the
blocks are walked with struct for it (block layout varies, so there is no vectorised shortcut).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import mmap
import select
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import pcapy

log = logging.getLogger("maltrail")

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",  # microseconds, little-endian file
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",  # nanoseconds
    b"\xa1\xb2\x3c\x4d": ">",
}
NANOSECOND_MAGICS = (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_PCAP_HEADER = 24
_RECORD_HEADER = 16
_SIXTEEN = np.arange(_RECORD_HEADER, dtype=np.int64)
_DEFAULT_MAX_SNAPLEN = 262144  # libpcap's largest sane record, by link type
_MAX_SNAPLEN = {231: 128 * 1024 * 1024, 249: 1024 * 1024, 279: 8 * 1024 * 1024}  # D-Bus, USBPcap, EBHSCR
_SWAPPED, _MAYBE_SWAPPED = 1, 2  # length fields of pcap versions before 2.4 (libpcap's rule)


class CaptureError(Exception):
    """One-line description of a capture problem, naming the file or interface."""


@dataclass
class Batch:
    """Packets in `data` at the offsets of `meta`'s rows (sec, usec, offset, caplen), in
    ascending order; there may be bytes between them (a classic pcap file's record headers)."""

    linktype: int
    meta: np.ndarray  # (n, 4) <u4
    wirelen: np.ndarray  # (n,) <u4
    data: bytes | memoryview

    def __len__(self) -> int:
        return len(self.wirelen)


def _meta_array(packed: bytes) -> np.ndarray:
    return np.frombuffer(packed, dtype="=u4").reshape(-1, 4)


def _file_kind(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise CaptureError(f"{path}: capture file not found") from None
    except IsADirectoryError:
        raise CaptureError(f"{path}: is a directory, not a capture file") from None
    except PermissionError:
        raise CaptureError(f"{path}: permission denied") from None
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read: {exc.strerror}") from None
    if not head:
        raise CaptureError(f"{path}: empty file, not a pcap/pcapng capture")
    if head in PCAP_MAGICS:
        return PCAP_MAGICS[head]
    if head == PCAPNG_MAGIC:
        return "ng"
    raise CaptureError(f"{path}: not a pcap or pcapng file (unknown magic {head.hex()})")


class _PcapRecords:
    """Classic pcap records walked over a read-only map of the file.

    libpcap's reader (through `next_batch`) copies every packet twice, through its own buffer
    into a new bytes object; on a replay that was most of the capture process's time. Here
    Python only walks the record headers (one unpack per record) and a batch's packet bytes are
    a view of the map, copied once, into the ring slot. libpcap's rules are kept: byte order,
    nanosecond files scaled to microseconds, the swapped length fields of versions before 2.4,
    records longer than the snapshot length shortened to it, and a damaged record ends the file
    with the message libpcap gives."""

    def __init__(self, path: Path, linktype: int) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._map = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
        self._map.madvise(mmap.MADV_SEQUENTIAL)
        self._data = np.frombuffer(self._map, dtype=np.uint8)
        magic = self._map[:4]
        order = PCAP_MAGICS[magic]
        self._fields = np.dtype(f"{order}u4")
        self._nanosecond = magic in NANOSECOND_MAGICS
        major, minor, _, _, snaplen = struct.unpack_from(f"{order}HHiII", self._map, 4)
        self._most = _MAX_SNAPLEN.get(linktype, _DEFAULT_MAX_SNAPLEN)
        self._snapshot = snaplen if 0 < snaplen < 2**31 else self._most  # libpcap reads it as an int
        self._mode = _SWAPPED if (major, minor) < (2, 3) else _MAYBE_SWAPPED if (major, minor) == (2, 3) else 0
        self._lengths = struct.Struct(f"{order}II").unpack_from
        self._caplen = struct.Struct(f"{order}I").unpack_from
        self._caplen_at = 12 if self._mode == _SWAPPED else 8
        self._pos = _PCAP_HEADER
        self._released = 0
        self.error = ""

    def take(self, count: int) -> tuple[np.ndarray, np.ndarray, memoryview] | None:
        """The next `count` records or fewer: (meta, wire lengths, packet bytes), or None at the
        end (`error` then says why, if the file was damaged)."""
        if self.error:
            return None
        self._release_read_pages()
        starts, pos = self._walk(count) if self._mode != _MAYBE_SWAPPED else self._walk_maybe_swapped(count)
        if not starts:
            self._ended(pos)
            return None
        at = np.array(starts, dtype=np.int64)
        head = self._data[at[:, None] + _SIXTEEN].view(self._fields).reshape(-1, 4)
        stored, wire = head[:, 2], head[:, 3]
        if self._mode == _SWAPPED:
            stored, wire = wire, stored
        elif self._mode == _MAYBE_SWAPPED:
            stored, wire = np.minimum(stored, wire), np.maximum(stored, wire)
        bad = ((stored > self._most) | (at + _RECORD_HEADER + stored > len(self._data))).nonzero()[0]
        if len(bad):  # the walk went on through a damaged record: cut it there, as libpcap stops
            cut = int(bad[0])
            self._damaged(int(stored[cut]), starts[cut])
            if not cut:
                return None
            at, head, stored, wire = at[:cut], head[:cut], stored[:cut], wire[:cut]
        elif len(starts) < count:
            self._ended(pos)
        caplen = np.minimum(stored, self._snapshot)
        base = int(at[0]) + _RECORD_HEADER
        meta = np.empty((len(at), 4), dtype="=u4")
        meta[:, 0] = head[:, 0]
        meta[:, 1] = head[:, 1] // 1000 if self._nanosecond else head[:, 1]
        meta[:, 2] = at + (_RECORD_HEADER - base)
        meta[:, 3] = caplen
        return meta, wire.astype("=u4"), memoryview(self._map)[base : int(at[-1]) + _RECORD_HEADER + int(caplen[-1])]

    def _walk(self, count: int) -> tuple[list[int], int]:
        """Start offsets of up to `count` records from the current position, one unpack each (the
        hot loop: checks come after it, for the whole batch), and the position after them."""
        m, pos, starts = self._map, self._pos, []
        limit, unpack, append, at = len(m) - _RECORD_HEADER, self._caplen, starts.append, self._caplen_at
        for _ in range(count):
            if pos > limit:
                break
            append(pos)
            pos += _RECORD_HEADER + unpack(m, pos + at)[0]
        self._pos = pos
        return starts, pos

    def _walk_maybe_swapped(self, count: int) -> tuple[list[int], int]:
        """`_walk` for version 2.3 files, where a record's two length fields may be swapped."""
        m, pos, starts = self._map, self._pos, []
        limit, unpack = len(m) - _RECORD_HEADER, self._lengths
        while len(starts) < count and pos <= limit:
            starts.append(pos)
            pos += _RECORD_HEADER + min(unpack(m, pos + 8))
        self._pos = pos
        return starts, pos

    def _ended(self, pos: int) -> None:
        """The walk stopped short of its count: the end of the file, or a cut record header."""
        if pos < len(self._data):
            self.error = f"truncated dump file; tried to read 16 header bytes, only got {len(self._data) - pos}"

    def _damaged(self, stored: int, start: int) -> None:
        """libpcap's message for the record at `start`: too long to be sane, or cut short."""
        if stored > self._most:
            bound = f"snaplen of {self._snapshot}" if stored > self._snapshot else f"maximum of {self._most}"
            self.error = f"invalid packet capture length {stored}, bigger than {bound}"
        else:
            got = len(self._data) - start - _RECORD_HEADER
            wanted = self._snapshot if got < self._snapshot < stored else stored  # a long record: its kept part first
            self.error = f"truncated dump file; tried to read {wanted} captured bytes, only got {got}"

    def _release_read_pages(self) -> None:
        """Unmap the batches taken so far (their reader has copied them by the time it asks for
        the next), so a long replay does not keep the whole file resident. A batch kept longer
        stays readable: its pages come back from the page cache."""
        done = self._pos // mmap.PAGESIZE * mmap.PAGESIZE
        if done > self._released:
            self._map.madvise(mmap.MADV_DONTNEED, self._released, done - self._released)
            self._released = done

    def close(self) -> None:
        """Unmap now unless a view is still alive (a batch, or a traceback through `take`, e.g. on
        Ctrl-C): then the mapping goes with the last view, and an interrupt is not masked."""
        self._data = np.zeros(0, np.uint8)
        with contextlib.suppress(BufferError):
            self._map.close()
        self._f.close()


class _PcapngLengths:
    """Original lengths of pcapng packet blocks (EPB, SPB, obsolete PB), in file order."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._map = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
        self._iter = self._lengths()

    def _lengths(self) -> Iterator[int]:
        m = self._map
        pos, end, order = 0, len(m), "<"
        snaplens: list[int] = []
        while pos + 12 <= end:
            raw_type = m[pos : pos + 4]
            if raw_type == PCAPNG_MAGIC:
                order = "<" if m[pos + 8 : pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
                snaplens = []
            btype, blen = struct.unpack_from(f"{order}II", m, pos)
            if blen < 12:
                return
            if btype == 1:  # interface description: snaplen for simple packet blocks
                snaplens.append(struct.unpack_from(f"{order}I", m, pos + 12)[0])
            elif btype in (2, 6):  # obsolete packet block, enhanced packet block
                yield struct.unpack_from(f"{order}I", m, pos + 24)[0]
            elif btype == 3:
                yield struct.unpack_from(f"{order}I", m, pos + 8)[0]
            pos += blen

    def take(self, caplen: np.ndarray) -> np.ndarray:
        """Lengths for the next packets; where the block walk disagrees with libpcap, the caplen."""
        out = np.fromiter(itertools.islice(self._iter, len(caplen)), dtype=np.uint32)
        if len(out) < len(caplen):
            out = np.concatenate([out, caplen[len(out):]]).astype(np.uint32)
        return np.maximum(out, caplen)

    def close(self) -> None:
        self._iter.close()
        self._map.close()
        self._f.close()


def file_linktype(path: Path | str) -> int:
    """The link type a capture file declares (a pcapng file's first interface), read before any packet."""
    try:
        reader = pcapy.open_offline(str(path))
    except pcapy.PcapError as exc:
        raise CaptureError(f"{path}: {exc}") from None
    try:
        return reader.datalink()
    finally:
        reader.close()


def read_batches(path: Path | str, max_packets: int = 4096, first_packets: int = 0) -> Iterator[Batch]:
    """Batches of a pcap or pcapng file, in file order. A damaged record ends the file (with a
    warning; the packets before it are kept). `first_packets`: a smaller first batch (0: none),
    so the workers start sooner."""
    path = Path(path)
    kind = _file_kind(path)
    try:
        reader = pcapy.open_offline(str(path))
    except pcapy.PcapError as exc:
        raise CaptureError(f"{path}: {exc}") from None
    linktype = reader.datalink()
    sizes = itertools.chain([min(first_packets, max_packets) or max_packets], itertools.repeat(max_packets))
    if kind == "ng":
        yield from _pcapng_batches(path, reader, linktype, sizes)
        return
    reader.close()
    records = _PcapRecords(path, linktype)
    try:
        for size in sizes:
            taken = records.take(size)
            if taken is None:
                break
            yield Batch(linktype, *taken)
        if records.error:
            log.warning("%s: %s (rest of the file ignored)", path, records.error)
    finally:
        records.close()


def _pcapng_batches(path: Path, reader: pcapy.Reader, linktype: int, sizes: Iterator[int]) -> Iterator[Batch]:
    """pcapng through libpcap's `next_batch`, the wire lengths from a walk of the blocks."""
    lengths = _PcapngLengths(path)
    delivered = 0
    try:
        for size in sizes:
            try:
                packets, packed = reader.next_batch(size)
            except pcapy.PcapError as exc:
                log.warning("%s: %s (rest of the file ignored)", path, exc)
                tail = _read_until_error(path, linktype, delivered)
                if tail is not None:
                    yield tail
                return
            if not packed:
                return
            meta = _meta_array(packed)
            delivered += len(meta)
            yield Batch(linktype, meta, lengths.take(meta[:, 3]), packets)
    finally:
        lengths.close()
        reader.close()


_ACTIVATE_ERRORS = {
    -5: "no such device",
    -7: "no permission to put the interface in promiscuous mode",
    -8: "permission denied (capturing needs root or CAP_NET_RAW)",
    -9: "interface is not up",
    -4: "handle already activated",
    -6: "monitor mode not supported",
    -1: "generic error",
}


def _read_until_error(path: Path, linktype: int, skip: int) -> Batch | None:
    """The packets between the last whole batch and a damaged record, one by one.

    `next_batch` fails as a whole when one record is damaged; the good packets before it must
    not be lost with it."""
    reader = pcapy.open_offline(str(path))
    rows: list[tuple[int, int, int, int]] = []
    wire: list[int] = []
    chunks: list[bytes] = []
    offset = 0
    try:
        for _ in range(skip):
            reader.next()
        while True:
            hdr, data = reader.next()
            if hdr is None:
                break
            sec, usec = hdr.getts()
            rows.append((sec, usec, offset, len(data)))
            wire.append(hdr.getlen())
            chunks.append(data)
            offset += len(data)
    except pcapy.PcapError:
        pass
    finally:
        reader.close()
    if not rows:
        return None
    meta = np.array(rows, dtype="=u4").reshape(-1, 4)
    return Batch(linktype, meta, np.array(wire, dtype=np.uint32), b"".join(chunks))


class LiveCapture:
    """Live capture with pcapy-ng; batches via `next_batch` (its wire length is the caplen)."""

    def __init__(
        self,
        interface: str,
        bpf: str = "",
        snaplen: int = 65535,
        promisc: bool = True,
        timeout_ms: int = 100,
        buffer_size: int = 64 << 20,
    ) -> None:
        self.interface = interface
        self._stopped = False
        try:
            cap = pcapy.create(interface)
            cap.set_snaplen(snaplen)
            cap.set_promisc(promisc)
            cap.set_timeout(timeout_ms)
            cap.set_buffer_size(buffer_size)
            status = cap.activate()
        except pcapy.PcapError as exc:
            raise CaptureError(f"{interface}: cannot capture: {exc}") from None
        if status is not None and status < 0:
            reason = _ACTIVATE_ERRORS.get(status, f"libpcap error {status}")
            raise CaptureError(f"{interface}: cannot capture: {reason}")
        if bpf:
            try:
                cap.setfilter(bpf)
            except pcapy.PcapError as exc:
                cap.close()
                raise CaptureError(f"{interface}: bad BPF filter {bpf!r}: {exc}") from None
        cap.setnonblock(1)
        self._cap = cap
        self._poll = select.poll()
        self._poll.register(cap.getfd(), select.POLLIN)
        self._wait_ms = timeout_ms
        self.linktype = cap.datalink()

    def batches(self, max_packets: int = 4096, idle: Callable[[], None] | None = None) -> Iterator[Batch]:
        """Until `stop()`. libpcap is read without blocking and the wait happens in `poll`,
        which Python interrupts for signals: an idle link never makes Ctrl-C wait. `idle` runs
        after every empty wait, so periodic work goes on when no packet comes."""
        while not self._stopped:
            packets, packed = self._cap.next_batch(max_packets)
            if packed:
                meta = _meta_array(packed)
                yield Batch(self.linktype, meta, meta[:, 3].copy(), packets)
            else:
                self._poll.poll(self._wait_ms)
                if idle is not None:
                    idle()

    def stop(self) -> None:
        self._stopped = True

    def stats(self) -> tuple[int, int, int]:
        """(received, dropped by the kernel, dropped by the interface)."""
        recv, drop, ifdrop = self._cap.stats()
        return int(recv), int(drop), int(ifdrop)

    def close(self) -> None:
        self._cap.close()


def _split_ts(ts: float, scale: int) -> tuple[int, int]:
    """(sec, fraction in 1/scale s), rounded to the microsecond: a float epoch holds no finer."""
    sec = int(ts)
    usec = round((ts - sec) * 1_000_000)
    if usec >= 1_000_000:
        sec, usec = sec + 1, usec - 1_000_000
    return sec, usec * (scale // 1_000_000)


class PcapWriter:
    """Classic pcap writer (little-endian; microsecond or nanosecond timestamps)."""

    def __init__(self, path: Path | str, linktype: int = 1, nanosecond: bool = False, snaplen: int = 65535) -> None:
        self._f = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._scale = 1_000_000_000 if nanosecond else 1_000_000
        magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
        self._f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))

    def write(self, frame: bytes, ts: float, wirelen: int | None = None) -> None:
        sec, frac = _split_ts(ts, self._scale)
        self._f.write(struct.pack("<IIII", sec, frac, len(frame), len(frame) if wirelen is None else wirelen))
        self._f.write(frame)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def write_pcapng(path: Path | str, linktype: int, packets: Iterable[tuple[float, bytes]]) -> None:
    """Minimal pcapng: section header, one interface, enhanced packet blocks (µs timestamps)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28))
        f.write(struct.pack("<IIHHII", 1, 20, linktype, 0, 65535, 20))
        for ts, frame in packets:
            sec, usec = _split_ts(ts, 1_000_000)
            stamp = sec * 1_000_000 + usec
            pad = (-len(frame)) % 4
            blen = 32 + len(frame) + pad
            f.write(struct.pack("<IIIIIII", 6, blen, 0, stamp >> 32, stamp & 0xFFFFFFFF, len(frame), len(frame)))
            f.write(frame + b"\0" * pad + struct.pack("<I", blen))
