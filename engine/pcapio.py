"""Capture input and output: pcap/pcapng files and live interfaces in batches, pcap writing.

Reading goes through pcapy-ng's `next_batch`, which walks the records in C and returns many
packets per call (sec, usec, offset, caplen). It does not return the original wire length, so
for classic pcap the record headers' positions are derived from the caplens (a cumulative sum)
and the length field is gathered from a map of the file with numpy; pcapng blocks are walked
with struct (block layout varies, so there is no vectorised shortcut). A replay reads a classic
pcap file with `PcapRecords` instead: when it can hold a read lease on the file, not at all (the
workers map the packets, `map`); else, for records big enough, straight into the ring slots, its
record headers walked there, where libpcap would copy every packet twice more. A little-endian
pcapng file likewise, mapped or read into the slots whatever its blocks' size (`engine.pcapng`).
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pcapy

from engine.filelease import ReadLease, lease_to_map, mapped_stretch
from engine.pcapng import SECTION_BLOCK, PcapngRecords
from shm.filemap import FileRef

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
_EIGHT = np.arange(8, dtype=np.int64)
SMALL_RECORDS = 350  # mean bytes a record below which libpcap reads a classic pcap file faster (its walk is in C)
_SAMPLE = 1 << 18  # bytes of a file's first records that tell their mean size
_DEFAULT_MAX_SNAPLEN = 262144  # libpcap's largest sane record, by link type
_MAX_SNAPLEN = {231: 128 * 1024 * 1024, 249: 1024 * 1024, 279: 8 * 1024 * 1024}  # D-Bus, USBPcap, EBHSCR
_SWAPPED, _MAYBE_SWAPPED = 1, 2  # length fields of pcap versions before 2.4 (libpcap's rule)
_MAX_STRETCH = 64 << 20  # bytes of a mapped file one batch may span (beyond its largest record)


def _length_mode(major: int, minor: int) -> int:
    """How a file of this pcap version orders a record's two length fields (libpcap's rule)."""
    return _SWAPPED if (major, minor) < (2, 3) else _MAYBE_SWAPPED if (major, minor) == (2, 3) else 0


def _stored_and_wire(mode: int, first: Any, second: Any) -> tuple[Any, Any]:
    """A record's captured and original lengths from its two length fields (ints or arrays)."""
    if mode == _SWAPPED:
        return second, first
    if mode == _MAYBE_SWAPPED:
        return np.minimum(first, second), np.maximum(first, second)
    return first, second


class CaptureError(Exception):
    """One-line description of a capture problem, naming the file or interface."""


@dataclass
class Batch:
    """Packets back to back in `data`; `meta` rows are (sec, usec, offset, caplen)."""

    linktype: int
    meta: np.ndarray  # (n, 4) <u4
    wirelen: np.ndarray  # (n,) <u4
    data: bytes

    def __len__(self) -> int:
        return len(self.wirelen)


def _meta_array(packed: bytes) -> np.ndarray:
    return np.frombuffer(packed, dtype="=u4").reshape(-1, 4)


_COMPRESSED = {  # leading bytes of compressed files -> (format, the tool that decompresses it)
    b"\x1f\x8b": ("gzip", "gunzip"), b"BZh": ("bzip2", "bunzip2"), b"\xfd7zX": ("xz", "unxz"),
    b"\x28\xb5\x2f\xfd": ("zstd", "unzstd"), b"\x04\x22\x4d\x18": ("lz4", "unlz4"),
}


def replay_problem(path: Path | str) -> str | None:
    """Why `path` cannot be replayed, or None: a replay opens the file several times (its kind,
    its link type, its records), which a pipe or a device would not give back twice."""
    path = Path(path)
    if path.is_file():
        return None
    if path.is_dir():
        return "is a directory, not a capture file"
    if path.exists():
        return "not a regular file (a pipe or a device cannot be replayed: write the capture to a file)"
    return "capture file not found"


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
    for magic, (kind, tool) in _COMPRESSED.items():
        if head.startswith(magic):
            raise CaptureError(f"{path}: {kind}-compressed; decompress it first ({tool} -c {path} > capture.pcap)")
    raise CaptureError(f"{path}: not a pcap or pcapng file (unknown magic {head.hex()})")


def _words_at(buf: memoryview | bytes, at: int) -> tuple[memoryview, ...]:
    """Four views of `buf` as native 32-bit words, the k-th starting at byte `at + k`: the word at
    byte `pos + at` is `views[pos & 3][pos >> 2]`, one index each instead of a struct unpack."""
    view = memoryview(buf)
    return tuple(view[at + k :][: (len(view) - at - k) // 4 * 4].cast("I") for k in range(4))


class PcapRecords:
    """Classic pcap records read straight into a caller's buffer (a ring slot, in a replay), or
    located in the file for the workers to map (`map`, `take`).

    libpcap's reader (through `next_batch`) copies every packet twice, through its own buffer
    into a new bytes object; on a replay that was most of the capture process's time. Here the
    file is read into the buffer (one copy, by the kernel), or not at all where a read lease keeps
    it unchanged while mapped, and Python only walks the record headers, one length read per
    record; the checks run after, for the whole batch. libpcap's rules
    are kept: byte order, nanosecond files scaled to microseconds, the swapped length fields of
    versions before 2.4, records longer than the snapshot length shortened to it, and a damaged
    record ends the file with the message libpcap gives (logged, in `error`)."""

    handed_over = False  # every record is read as libpcap reads it: none is left to libpcap (`PcapngRecords`)
    delivered = 0

    def __init__(self, path: Path, linktype: int) -> None:
        self.path = path
        self.linktype = linktype
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        head = self._f.read(_PCAP_HEADER)
        order = PCAP_MAGICS[head[:4]]
        self._fields = np.dtype(f"{order}u4")
        self._nanosecond = head[:4] in NANOSECOND_MAGICS
        major, minor, _, _, snaplen = struct.unpack_from(f"{order}HHiII", head, 4)
        self._most = _MAX_SNAPLEN.get(linktype, _DEFAULT_MAX_SNAPLEN)
        self.largest = _RECORD_HEADER + self._most  # the least room `fill` needs
        self._snapshot = snaplen if 0 < snaplen < 2**31 else self._most  # libpcap reads it as an int
        self._mode = _length_mode(major, minor)
        self._lengths = struct.Struct(f"{order}II").unpack_from
        self._caplen = struct.Struct(f"{order}I").unpack_from
        self._caplen_at = 12 if self._mode == _SWAPPED else 8
        self._native = self._fields.isnative  # the walk can read the lengths as this machine's words
        self._carry = b""  # what was read past the last record taken
        self._eof = False
        self._mean = 2048.0  # bytes a record, for how much to read
        self.error = ""
        self._lease: ReadLease | None = None
        self._at = 0  # where the next record starts, while mapped
        self._size = 0
        self.source: FileRef | None = None  # set while mapped: the file the slots point into

    @property
    def mapped(self) -> bool:
        return self._lease is not None

    def map(self) -> bool:
        """Serve the rest of the file by mapping it (`take`) rather than reading it into slots, if a
        read lease on it can be had (`engine.filelease`): then nobody can change it while mapped."""
        fd = self._f.fileno()
        leased = None if self._carry or self._eof else lease_to_map(fd)
        if leased is None:
            return False
        self._lease, self.source = leased
        self._at = self._f.tell()
        self._size = os.fstat(fd).st_size  # read again under the lease: from now on it cannot change
        return True

    @property
    def lease_broken(self) -> bool:
        """Someone waits to write to the mapped file: `unmap` once no slot points into it any more."""
        return self._lease is not None and self._lease.broken

    def unmap(self) -> None:
        """Back to reading into the slots, from the next record on; the lease goes."""
        if self._lease is not None:
            self._lease.release()
            self._lease = None
            self.source = None
            self._f.seek(self._at)
            self._eof = False

    def take(self, count: int) -> tuple[np.ndarray, np.ndarray, int, int] | None:
        """Up to `count` records of the mapped file: (meta with offsets from the first record's
        header, wire lengths, bytes they span, file offset of that header), or None at the end.
        The walk and checks are `fill`'s, over a map of the next stretch of the file."""
        if self.error or self._at >= self._size:
            return None
        end = min(self._size, self._at + max(min(self.room(count) * 5 // 4, _MAX_STRETCH), self.largest))
        with mapped_stretch(self._f.fileno(), self._at, end) as view:
            self._eof = end == self._size
            starts, pos = self._walk(view, len(view), count)
            taken = self._check(view, starts, pos, len(view), b"")
        if taken is None:
            return None
        at, self._at = self._at, self._at + pos
        self._mean = taken[2] / len(taken[1])
        return (*taken, at)

    def mean_record(self) -> float:
        """Mean bytes of the file's first records (those in its first 256 KiB), without reading on."""
        sample = os.pread(self._f.fileno(), _SAMPLE, _PCAP_HEADER)
        starts, pos = self._walk(sample, len(sample), _SAMPLE)
        return pos / len(starts) if starts else float("inf")

    def room(self, count: int) -> int:
        """Bytes to read for about `count` records of the mean size so far (or what was read ahead).
        What is read past the records taken is carried to the next slot, copied out and back in:
        a quarter more, as this read once, made those copies a sixth of the capture's CPU on the
        unique capture, so a batch of larger records comes out a little short instead (a record
        longer than the read gets a second read, `fill`)."""
        return max(len(self._carry), int(count * self._mean))

    def fill(self, out: memoryview, count: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        """Up to `count` records into `out` (at least `largest` bytes): (meta with offsets into
        `out`, wire lengths, bytes used), or None at the end of the file."""
        if self.error or (self._eof and not self._carry):
            return None
        have = min(len(self._carry), len(out))  # a smaller buffer than the last takes what fits
        out[:have], rest = self._carry[:have], self._carry[have:]
        end = have + (self._read(out[have : min(len(out), self.room(count))]) if not rest else 0)
        starts, pos = self._walk(out, end, count)
        if not starts and not self._eof and not rest and end < len(out):  # one record longer than guessed
            end += self._read(out[end:])
            starts, pos = self._walk(out, end, count)
        taken = self._check(out, starts, pos, end, rest)
        self._carry = bytes(out[pos:end]) + rest if not self.error else b""
        if taken is not None:
            self._mean = taken[2] / len(taken[1])
        return taken

    def _read(self, into: memoryview) -> int:
        """Fill `into` from the file; a short read is the end of a regular file."""
        got = 0
        while got < len(into) and not self._eof:
            n = self._f.readinto(into[got:])
            self._eof = not n
            got += n or 0
        return got

    def _walk(self, buf: memoryview | bytes, end: int, count: int) -> tuple[list[int], int]:
        """Start offsets of up to `count` records in `buf[:end]`, one length read each (the hot loop:
        the checks come after, for the whole batch), and where the first record not taken starts."""
        pos, starts = 0, []
        limit, append, at = end - _RECORD_HEADER, starts.append, self._caplen_at
        if self._mode == _MAYBE_SWAPPED:
            lengths = self._lengths
            while len(starts) < count and pos <= limit:
                append(pos)
                pos += _RECORD_HEADER + min(lengths(buf, pos + 8))
        elif self._native:  # about 12 % fewer instructions a record than an unpack
            words = _words_at(memoryview(buf)[:end], at)  # a length field cut by the end raises IndexError
            try:  # no bound test a record: 13 % fewer instructions (a record whose header is cut
                # but whose length field is not advances past `end`, and is dropped below)
                for _ in itertools.repeat(None, count):
                    append(pos)
                    pos += 16 + words[pos & 3][pos >> 2]
            except IndexError:
                starts.pop()
        else:
            unpack = self._caplen
            for _ in range(count):
                if pos > limit:
                    break
                append(pos)
                pos += _RECORD_HEADER + unpack(buf, pos + at)[0]
        if pos > end:  # the last record goes on past what was read: it starts the next buffer
            pos = starts.pop()
        return starts, pos

    def _check(self, buf: memoryview, starts: list[int], pos: int, end: int, rest: bytes
               ) -> tuple[np.ndarray, np.ndarray, int] | None:
        """The columns of the walked records, cut before the first damaged one (as libpcap stops)."""
        at = np.array(starts, dtype=np.int64)
        headers = np.ndarray((max(end - _RECORD_HEADER + 1, 0),), dtype="V16", buffer=buf, strides=(1,))
        head = headers[at].view(self._fields).reshape(-1, 4)  # one 16-byte gather a record
        stored, wire = _stored_and_wire(self._mode, head[:, 2], head[:, 3])
        bad = (stored > self._most).nonzero()[0]
        if len(bad):  # the walk went on through a damaged record
            cut = int(bad[0])
            self._fail(self._damaged(int(stored[cut]), 0))
            at, head, stored, wire = at[:cut], head[:cut], stored[:cut], wire[:cut]
        elif not rest or not starts:  # stopped at the end of all there is so far, or at its first record
            self._stopped_at(buf, pos, end)
        if not len(at):
            return None
        caplen = np.minimum(stored, self._snapshot)
        meta = np.empty((len(at), 4), dtype="=u4")
        meta[:, 0] = head[:, 0]
        meta[:, 1] = head[:, 1] // 1000 if self._nanosecond else head[:, 1]
        meta[:, 2] = at + _RECORD_HEADER
        meta[:, 3] = caplen
        return meta, wire.astype("=u4"), int(at[-1]) + _RECORD_HEADER + int(caplen[-1])

    def _stopped_at(self, buf: memoryview, pos: int, end: int) -> None:
        """The walk stopped at `pos`: a record there that libpcap would fail on fails the file."""
        left = end - pos
        if left >= _RECORD_HEADER:
            stored = int(_stored_and_wire(self._mode, *self._lengths(buf, pos + 8))[0])
            if stored > self._most or (self._eof and pos + _RECORD_HEADER + stored > end):
                self._fail(self._damaged(stored, left - _RECORD_HEADER))
        elif self._eof and left:
            self._fail(f"truncated dump file; tried to read 16 header bytes, only got {left}")

    def _damaged(self, stored: int, got: int) -> str:
        """libpcap's message for a record too long to be sane, or cut short after `got` bytes."""
        if stored > self._most:
            bound = f"snaplen of {self._snapshot}" if stored > self._snapshot else f"maximum of {self._most}"
            return f"invalid packet capture length {stored}, bigger than {bound}"
        wanted = self._snapshot if got < self._snapshot < stored else stored  # a long record: its kept part first
        return f"truncated dump file; tried to read {wanted} captured bytes, only got {got}"

    def _fail(self, message: str) -> None:
        self.error = message
        log.warning("%s: %s (rest of the file ignored)", self.path, message)

    def close(self) -> None:
        self.unmap()
        self._f.close()


Records = PcapRecords | PcapngRecords  # a replay's reader of a file (`open_records`)


class _PcapLengths:
    """Original lengths of classic pcap records, from the caplens `next_batch` returned (their
    positions are a cumulative sum; one gather of the length fields from the batch's stretch of
    the file). The file is read, not mapped: one truncated meanwhile (a writer, where libpcap
    reads a file without a lease) then reads short, where a map would end the process (SIGBUS)."""

    def __init__(self, path: Path, order: str) -> None:
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self._fd = self._f.fileno()
        self._order = order
        self._dtype = np.dtype(f"{order}u4")
        head = os.pread(self._fd, _PCAP_HEADER, 0)
        self._mode = _length_mode(*struct.unpack_from(f"{order}HH", head, 4)) if len(head) == _PCAP_HEADER else 0
        self._pos = _PCAP_HEADER

    def take(self, caplen: np.ndarray) -> np.ndarray:
        """Lengths for the next packets; where the file no longer holds their records, the caplen."""
        steps = caplen.astype(np.int64) + _RECORD_HEADER
        starts = self._pos + np.concatenate(([0], np.cumsum(steps)[:-1]))
        if not len(starts):
            return np.zeros(0, np.uint32)
        first = int(starts[0])
        stretch = np.frombuffer(os.pread(self._fd, int(starts[-1]) + _RECORD_HEADER - first, first), np.uint8)
        fields = self._fields(stretch, starts + 8 - first)  # the two length fields of each record
        stored, wire = _stored_and_wire(self._mode, fields[:, 0], fields[:, 1])
        read = starts + _RECORD_HEADER - first <= len(stretch)  # all of it, but in a file cut meanwhile
        if np.array_equal(stored[read], caplen[read]):
            self._pos = int(starts[-1] + steps[-1])
            return np.where(read, wire, caplen).astype(np.uint32)
        return self._walk(caplen)

    def _fields(self, stretch: np.ndarray, at: np.ndarray) -> np.ndarray:
        """The two u32 at each offset of `stretch`, as (n, 2): one gather of 8 bytes per record
        (offsets need no alignment), then a view in the file's byte order."""
        if not len(stretch):
            stretch = np.zeros(8, np.uint8)
        raw = np.take(stretch, at[:, None] + _EIGHT, mode="clip")
        return raw.view(self._dtype).reshape(-1, 2)

    def _walk(self, caplen: np.ndarray) -> np.ndarray:
        """Record by record, for files whose records libpcap shortened (caplen > snaplen); the
        caplen where the file no longer holds a record."""
        out = caplen.astype(np.uint32)
        fmt = struct.Struct(f"{self._order}II")
        for i in range(len(caplen)):
            raw = os.pread(self._fd, 8, self._pos + 8)
            if len(raw) < 8:
                break
            incl, orig = _stored_and_wire(self._mode, *fmt.unpack(raw))
            out[i] = orig
            self._pos += _RECORD_HEADER + int(incl)
        return out

    def close(self) -> None:
        self._f.close()


class _PcapngLengths:
    """Original lengths of pcapng packet blocks (EPB, SPB, obsolete PB), in file order. One unpack a
    block reads its type, its length and, were it an EPB or PB, its original length, where a
    generator of an unpack a field cost a tenth more. The file is read in stretches, not mapped,
    as `_PcapLengths` reads it."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self._fd = self._f.fileno()
        self._pos = 0
        self._order = "<"
        self._buf = b""  # the file from `_buf_at` on
        self._buf_at = 0

    def _walk(self, n: int) -> list[int]:
        """The original lengths of the next `n` packet blocks (fewer at the end, or at a block
        shorter than a block can be, where the walk stops for good)."""
        pos, order = self._pos, self._order
        m, base = self._buf, self._buf_at
        head, pair, word = _NG_HEAD[order], _NG_PAIR[order], _NG_WORD[order]
        out: list[int] = []
        while len(out) < n:
            p = pos - base
            if p + 28 > len(m):  # the next block's head is not all read: read on from it
                m, base, p = os.pread(self._fd, _NG_STRETCH, pos), pos, 0
                if len(m) < 12:
                    break
            btype, blen, orig = head(m, p) if p + 28 <= len(m) else (*pair(m, p), -1)
            if btype == _NG_SECTION:  # the section's byte-order magic tells its order
                order = "<" if m[p + 8 : p + 12] == b"\x4d\x3c\x2b\x1a" else ">"
                head, pair, word = _NG_HEAD[order], _NG_PAIR[order], _NG_WORD[order]
                blen = pair(m, p)[1]
            if blen < 12 or (btype in (2, 6) and orig < 0):  # not a block, or a packet block cut short
                m, base, pos = b"", 0, 1 << 62
                break
            if btype in (2, 6):  # obsolete packet block, enhanced packet block
                out.append(orig)
            elif btype == 3:  # simple packet block
                out.append(word(m, p + 8)[0])
            pos += blen
        self._pos, self._order, self._buf, self._buf_at = pos, order, m, base
        return out

    def take(self, caplen: np.ndarray) -> np.ndarray:
        """Lengths for the next packets; where the block walk disagrees with libpcap, the caplen."""
        out = np.array(self._walk(len(caplen)), dtype=np.uint32)
        if len(out) < len(caplen):
            out = np.concatenate([out, caplen[len(out):]]).astype(np.uint32)
        return np.maximum(out, caplen)

    def close(self) -> None:
        self._f.close()


_NG_SECTION = SECTION_BLOCK
_NG_HEAD = {order: struct.Struct(f"{order}II16xI").unpack_from for order in "<>"}  # type, length, original length
_NG_PAIR = {order: struct.Struct(f"{order}II").unpack_from for order in "<>"}
_NG_WORD = {order: struct.Struct(f"{order}I").unpack_from for order in "<>"}
_NG_STRETCH = 1 << 20  # bytes of a pcapng file read at a time for its blocks' lengths


def file_linktype(path: Path | str) -> int:
    """The link type a capture file declares (a pcapng file's first interface), read before any packet."""
    _, reader = _open_offline(Path(path))
    try:
        return reader.datalink()
    finally:
        reader.close()


def _open_offline(path: Path) -> tuple[str, pcapy.Reader]:
    """The file's kind (`_file_kind`) and libpcap's reader of it, which checks its header."""
    kind = _file_kind(path)
    try:
        return kind, pcapy.open_offline(str(path))
    except pcapy.PcapError as exc:
        raise CaptureError(f"{path}: {exc}") from None


def next_count(max_packets: int, max_bytes: int, packets: int, size: int) -> int:
    """How many packets to ask libpcap for next: `max_packets`, or fewer, so that a batch of the
    mean size so far (`size` bytes over `packets`) holds about `max_bytes` (0: no bound). libpcap
    copies a batch into one new bytes object, and the sensor copies that into ring slots: batches of
    28 MB cost twice the CPU a packet of batches of 7 MB (1.59 against 0.77 µs, 870-byte packets)."""
    if not max_bytes or not packets or not size:
        return max_packets
    return max(1, min(max_packets, max_bytes * packets // size))


def read_batches(path: Path | str, max_packets: int = 4096, first_packets: int = 0, max_bytes: int = 0,
                 skip: int = 0) -> Iterator[Batch]:
    """Batches of a pcap or pcapng file, in file order, read by libpcap (`next_batch`: its copies
    are the caller's own, which may keep them); the wire lengths, which it does not give, from the
    file's record headers or blocks. A damaged record ends the file (with a warning; the packets
    before it are kept). `first_packets`: a smaller first batch (0: none), so the workers start
    sooner; `max_bytes`: about the most bytes of packets a batch holds (`next_count`); `skip`: the
    first packets, read and dropped (a replay read them itself, `PcapngRecords`). A replay reads
    into ring slots, or has the workers map the file, instead where that pays (`open_records`)."""
    path = Path(path)
    kind, reader = _open_offline(path)
    linktype = reader.datalink()
    lengths: _PcapLengths | _PcapngLengths = _PcapngLengths(path) if kind == "ng" else _PcapLengths(path, kind)
    size = max_packets if skip else min(first_packets, max_packets) or max_packets
    delivered = read = 0
    try:
        while True:
            try:
                packets, packed = reader.next_batch(size)
            except pcapy.PcapError as exc:
                log.warning("%s: %s (rest of the file ignored)", path, exc)
                tail = _read_until_error(path, linktype, max(delivered, skip))
                if tail is not None:
                    yield tail
                return
            if not packed:
                return
            meta = _meta_array(packed)
            wirelen = lengths.take(meta[:, 3])
            delivered += len(meta)
            read += len(packets)
            if delivered > skip:
                yield _without_first(Batch(linktype, meta, wirelen, packets), skip - (delivered - len(meta)))
            size = next_count(max_packets, max_bytes, delivered, read)
    finally:
        lengths.close()
        reader.close()


def _without_first(batch: Batch, drop: int) -> Batch:
    """The batch without its first `drop` packets (the whole batch when `drop` is 0 or less)."""
    if drop <= 0:
        return batch
    meta = batch.meta[drop:].copy()
    start = int(meta[0, 2])
    meta[:, 2] -= start
    return Batch(batch.linktype, meta, batch.wirelen[drop:], batch.data[start:])


def open_records(path: Path | str, map_file: bool = False) -> Records | None:
    """The records of a replayed file, when not read by libpcap (`read_batches`). A classic pcap
    file's (`PcapRecords`): mapped (`PcapRecords.map`) when `map_file` and a read lease can be
    had, whatever the records' size (no copy at all beats libpcap's walk in C); else, to be read
    straight into the ring slots, when its records are big enough for the walk in Python to beat
    libpcap's copies. A pcapng file's (`PcapngRecords`): mapped likewise, else read into the slots
    whatever the blocks' size (libpcap's reads of pcapng cost a second walk for the original
    lengths); big-endian ones are libpcap's. None otherwise. libpcap opens the file either way: it
    checks the header and names the link type."""
    path = Path(path)
    kind, reader = _open_offline(path)
    linktype = reader.datalink()
    reader.close()
    if kind == "ng":
        return PcapngRecords.open(path, linktype, _MAX_SNAPLEN.get(linktype, _DEFAULT_MAX_SNAPLEN), map_file)
    records = PcapRecords(path, linktype)
    if (map_file and records.map()) or records.mean_record() >= SMALL_RECORDS:
        return records
    records.close()
    return None


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
    not be lost with it. None when the file no longer opens (truncated or replaced meanwhile)."""
    try:
        reader = pcapy.open_offline(str(path))
    except pcapy.PcapError:
        return None
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
            rows.append((sec % 2**32, usec, offset, len(data)))  # pcapy gives a signed 32-bit second
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

    def batches(self, max_packets: int = 4096, idle: Callable[[], None] | None = None, max_bytes: int = 0
                ) -> Iterator[Batch]:
        """Until `stop()`. libpcap is read without blocking and the wait happens in `poll`,
        which Python interrupts for signals: an idle link never makes Ctrl-C wait. `idle` runs
        after every empty wait, so periodic work goes on when no packet comes. `max_bytes`: about
        the most bytes of packets a batch holds, at the last batch's mean size (`next_count`)."""
        count = max_packets
        while not self._stopped:
            packets, packed = self._cap.next_batch(count)
            if packed:
                meta = _meta_array(packed)
                yield Batch(self.linktype, meta, meta[:, 3].copy(), packets)
                count = next_count(max_packets, max_bytes, len(meta), len(packets))
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
