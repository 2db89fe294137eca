"""pcapng files replayed without libpcap: their blocks walked in Python, the packet blocks' fields
read for a whole batch with numpy, the packets mapped by the workers (`shm.filemap`) or, without a
read lease on the file, read straight into the ring slots, as classic pcap files are
(`engine.pcapio.PcapRecords`). Through libpcap a pcapng replay cost 3-4 times the CPU of a classic
one: libpcap copies every packet twice, and the original lengths, which its `next_batch` does not
return, took a second walk of the blocks.

libpcap stays the judge (its sf-pcapng.c): only what it reads without complaint is read here, by
its rules. That is little-endian sections of version 1; interfaces of the first one's link type and
snapshot length, with their if_tsresol and if_tsoffset; Enhanced Packet Blocks; and blocks of any
other type but the Simple and the obsolete Packet Block, skipped as libpcap skips them. From any
other block on (one of those two, a damaged block, an option libpcap would refuse or that
libpcap versions read differently), the rest of the file is handed to libpcap (`handed_over`; the
caller goes on with `read_batches(..., skip=delivered)`), which reads it, or fails on it, as it
always has.
"""

from __future__ import annotations

import itertools
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.filelease import ReadLease, lease_to_map, mapped_stretch
from shm.filemap import FileRef

SECTION_BLOCK = 0x0A0D0D0A  # a section header's type: the same bytes in either byte order
_SHB, _IDB, _PB, _SPB, _EPB = SECTION_BLOCK, 1, 2, 3, 6
_ORDER_MAGIC = 0x1A2B3C4D
_EPB_HEAD = 28  # type, length, interface, timestamp (high, low), captured and original length
_EPB_LEAST = _EPB_HEAD + 4  # with the trailer
_MAX_BLOCK = 16 << 20  # libpcap's first bound on a block; past it, libpcap decides
_MAX_STRETCH = 64 << 20  # bytes of the file one batch may span (beyond its largest block)
_MICROSECONDS = 1_000_000  # libpcap opens files for microsecond timestamps
_PAIR = struct.Struct("<II").unpack_from
_WORD = struct.Struct("<I").unpack_from
_OPTION = struct.Struct("<HH").unpack_from
_OPT_END, _IF_TSRESOL, _IF_TSOFFSET = 0, 9, 14


@dataclass(frozen=True)
class _Interface:
    """How an interface's timestamps become seconds and microseconds: ticks a second, seconds
    added, and the fraction's scaling (multiply, then divide: libpcap's integer steps)."""

    ticks: int
    offset: int
    scale: tuple[int, int]


def _interface(block: memoryview, most: int) -> tuple[int, int, _Interface] | None:
    """(link type, snapshot length as libpcap adjusts it, timestamps) of an Interface Description
    Block, or None where libpcap would refuse it or its versions differ on it."""
    body = block[8:-4]
    if len(body) < 8:
        return None
    linktype, _, snaplen = struct.unpack_from("<HHI", body)
    snapshot = most if snaplen == 0 else snaplen if snaplen <= most else None  # above: libpcap versions differ
    ticks, binary, offset, seen = _MICROSECONDS, False, 0, set()
    pos = 8
    while pos < len(body):
        if len(body) - pos < 4:
            return None
        code, length = _OPTION(body, pos)
        value = bytes(body[pos + 4 : pos + 4 + length])
        pos += 4 + (length + 3) // 4 * 4
        if pos > len(body) or code in seen:  # cut short, or a timestamp option twice
            return None
        if code == _OPT_END:
            if length:
                return None
            break
        if code == _IF_TSRESOL:
            if length != 1:
                return None
            exponent = value[0] & 0x7F
            binary = bool(value[0] & 0x80)
            if exponent > (40 if binary else 9):  # finer than libpcap's microseconds need: its call
                return None
            ticks = 1 << exponent if binary else 10**exponent
        elif code == _IF_TSOFFSET:
            if length != 8:
                return None
            offset = int.from_bytes(value, "little", signed=True)
        if code in (_IF_TSRESOL, _IF_TSOFFSET):
            seen.add(code)
    if snapshot is None:
        return None
    scale = (_MICROSECONDS, ticks) if binary else (1, ticks // _MICROSECONDS) if ticks > _MICROSECONDS else (
        _MICROSECONDS // ticks, 1)
    return linktype, snapshot, _Interface(ticks, offset, scale)


def _packet_run(buf: memoryview, pos: int, end: int, count: int) -> tuple[np.ndarray, int]:
    """Starts of the Enhanced Packet Blocks (of at least their fixed size) from `pos` in
    `buf[:end]`, up to `count` and whole there, and where the first other block starts: each
    block's length read as a native word (blocks are 4-byte aligned), types and sizes checked
    after, for the whole run at once; the classic walk reads a length a record too."""
    words = memoryview(buf)[: end & ~3].cast("I")
    starts: list[int] = []
    append = starts.append
    try:
        for _ in itertools.repeat(None, count):
            append(pos)
            pos += words[(pos >> 2) + 1]
    except IndexError:  # the block's header is cut by the end
        pos = starts.pop()
    if pos > end:  # the last block goes on past the end
        pos = starts.pop()
    at = np.array(starts, dtype=np.int64)
    if at.size:
        head = np.frombuffer(buf, "<u4", end >> 2)
        odd = ((head[at >> 2] != _EPB) | (head[(at >> 2) + 1] < _EPB_LEAST)).nonzero()[0]
        if odd.size:
            pos, at = starts[int(odd[0])], at[: odd[0]]
    return at, pos


class PcapngRecords:
    """The Enhanced Packet Blocks of a pcapng file, located for the workers to map (`take`) where
    the file is leased, else read into the ring slots (`fill`), as `PcapRecords` serves a classic
    file."""

    def __init__(self, path: Path, linktype: int, most: int) -> None:
        self.path = path
        self.linktype = linktype
        self._most = most
        self.largest = _EPB_LEAST + most  # the largest packet block libpcap takes (but options)
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self._interfaces: list[_Interface] = []  # of the current section
        self._snapshot = -1  # the file's first interface's, which every later one must have
        self._lease: ReadLease | None = None
        self.source: FileRef | None = None
        self._at = 0  # where the next block starts
        self._size = 0
        self._mean = 2048.0  # bytes a block, for how much to map
        self.delivered = 0  # packets taken
        self.handed_over = False  # libpcap reads on from the first packet not taken
        self.error = ""  # never set: libpcap tells what it refuses

    @classmethod
    def open(cls, path: Path, linktype: int, most: int, map_file: bool) -> PcapngRecords | None:
        """The file's records, mapped when `map_file` and a read lease on it can be had, else to be
        read into the slots; None (libpcap reads it all) when the file is not little-endian (nor
        this machine: the walk reads native words). libpcap has opened it already: its first
        section header is sound."""
        records = cls(path, linktype, most)
        head = records._f.read(12)
        if sys.byteorder != "little" or len(head) < 12 or struct.unpack("<III", head)[2] != _ORDER_MAGIC:
            records.close()
            return None
        records._at = _PAIR(head, 0)[1]
        if map_file:
            records._map()
        return records

    def _map(self) -> None:
        leased = lease_to_map(self._f.fileno())
        if leased is not None:
            self._lease, self.source = leased
            self._size = os.fstat(self._f.fileno()).st_size  # under the lease: it cannot change now

    @property
    def mapped(self) -> bool:
        return self._lease is not None

    @property
    def lease_broken(self) -> bool:
        """Someone waits to write to the file: `unmap` once no slot points into it any more."""
        return self._lease is not None and self._lease.broken

    def unmap(self) -> None:
        """Let the lease go; the rest of the file is read into the slots (`fill`)."""
        self._release()

    def take(self, count: int) -> tuple[np.ndarray, np.ndarray, int, int] | None:
        """Up to `count` packets of the mapped file: (meta with offsets from where the stretch
        starts, wire lengths, bytes they span, file offset of that start), or None at the end or
        at a hand-over."""
        least = self.largest
        while not self.handed_over and self._lease is not None and self._at < self._size:
            at = self._at
            end = min(self._size, at + self._stretch(count, least))
            with mapped_stretch(self._f.fileno(), at, end) as view:
                taken, least = self._step(view, end == self._size, count)
            if taken is not None:
                return (*taken, at)
        return None

    def fill(self, out: memoryview, count: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        """Up to `count` packets read into `out` (at least `largest` bytes): (meta with offsets into
        `out`, wire lengths, bytes used), or None at the end or at a hand-over. Without a lease a
        writer may change the file meanwhile: what was read is a copy, and a block cut short by a
        truncation is the end of the file for now, which libpcap then judges. A block longer
        than `out` is libpcap's too."""
        least = self.largest
        while not self.handed_over and self._lease is None:
            want = min(len(out), self._stretch(count, least))
            if want < least:
                self._hand_over()
                break
            got = os.preadv(self._f.fileno(), [out[:want]], self._at)
            if not got:
                break
            taken, least = self._step(out[:got], got < want, count)
            if taken is not None:
                return taken
        return None

    def _stretch(self, count: int, least: int) -> int:
        """Bytes to map or read for about `count` blocks of the mean size so far, a quarter more."""
        return max(min(int(count * self._mean) * 5 // 4, _MAX_STRETCH), least)

    def _step(self, view: memoryview, at_end: bool, count: int
              ) -> tuple[tuple[np.ndarray, np.ndarray, int] | None, int]:
        """The packets of a stretch of the file at `_at` (`at_end`: it ends where the file does),
        `_at` moved past them: (their columns, or None when the stretch held none, and the bytes
        the next stretch needs: more when its first block went on past this one)."""
        blocks, pos, stop = self._walk(view, len(view), count)
        taken, bad = self._columns(view, blocks)
        least = max(_PAIR(view, 0)[1], self.largest) if not pos and len(view) >= 8 else self.largest
        self._at += pos if bad is None else bad
        if taken is not None:
            self.delivered += len(taken[1])
            self._mean = max(taken[2] / len(taken[1]), 1.0)
        if stop or bad is not None or (taken is None and not pos and at_end):  # cut short at the end: libpcap's to tell
            self._hand_over()
        return taken, least

    def _walk(self, buf: memoryview, end: int, count: int) -> tuple[np.ndarray, int, bool]:
        """Starts of up to `count` Enhanced Packet Blocks whole in `buf[:end]`, where the walk
        stopped, and whether libpcap reads on from there. Runs of packet blocks are walked as
        `PcapRecords` walks records (`_packet_run`, the hot loop); a block between them is
        looked at alone (`_other_block`)."""
        runs: list[np.ndarray] = []
        pos = taken = 0
        while True:
            run, pos = _packet_run(buf, pos, end, count - taken)
            runs.append(run)
            taken += run.size
            if taken == count or pos + 12 > end:
                return np.concatenate(runs), pos, False
            btype, blen = _PAIR(buf, pos)
            stop = self._other_block(buf, pos, end, btype, blen, taken > 0)
            if stop is not None:
                return np.concatenate(runs), pos, stop
            pos += blen

    def _other_block(self, buf: memoryview, pos: int, end: int, btype: int, blen: int, packets: bool) -> bool | None:
        """A block other than a whole Enhanced Packet Block at `pos` (rare): None when walked past
        (skipped, or taken in), else where the walk stops: True when libpcap reads on from there,
        False when the next batch starts with it (it is cut by the end of the stretch, or sets up
        interfaces after this batch's packets)."""
        if blen < 12 or blen % 4 or blen > _MAX_BLOCK:
            return True
        if blen > end - pos:
            return False
        if btype in (_EPB, _SPB, _PB) or _WORD(buf, pos + blen - 4)[0] != blen:  # an EPB shorter than its fields,
            return True  # the packet blocks libpcap alone reads, a trailer that disagrees
        if btype in (_SHB, _IDB):
            if packets:
                return False
            if not self._section_block(buf[pos : pos + blen], btype):
                return True
        return None

    def _section_block(self, block: memoryview, btype: int) -> bool:
        """Take in a section header (a new, empty table of interfaces) or an interface; False
        where libpcap must judge it."""
        if btype == _SHB:
            if len(block) < 28 or struct.unpack_from("<IH", block, 8) != (_ORDER_MAGIC, 1):
                return False
            self._interfaces = []
            return True
        parsed = _interface(block, self._most)
        if parsed is None:
            return False
        linktype, snapshot, interface = parsed
        if self._snapshot < 0:  # the file's first: libpcap took its link type and snapshot length from it
            self._snapshot = snapshot
        elif linktype != self.linktype or snapshot != self._snapshot:
            return False
        self._interfaces.append(interface)
        return True

    def _columns(self, buf: memoryview, at: np.ndarray
                 ) -> tuple[tuple[np.ndarray, np.ndarray, int] | None, int | None]:
        """The walked blocks' (meta, wire lengths, bytes spanned), up to the first that libpcap
        would refuse, and where that one starts (None: none)."""
        if not at.size:
            return None, None
        heads = np.ndarray((len(buf) - _EPB_HEAD + 1,), f"V{_EPB_HEAD}", buf, strides=(1,))
        head = heads[at].view("<u4").reshape(-1, 7)
        blen, interface, caplen = head[:, 1], head[:, 2], head[:, 5]
        trailer = np.ndarray((len(buf) - 3,), "<u4", buf, strides=(1,))[at + blen - 4]
        bad = ((blen & 3) != 0) | (trailer != blen) | (caplen > blen - _EPB_LEAST) | (caplen > max(self._snapshot, 0))
        bad |= interface >= len(self._interfaces)
        first_bad = None
        if bad.any():
            cut = int(bad.argmax())
            first_bad = int(at[cut])
            at, head, interface, caplen = at[:cut], head[:cut], interface[:cut], caplen[:cut]
            if not cut:
                return None, first_bad
        ticks = head[:, 3].astype(np.uint64) << np.uint64(32) | head[:, 4]
        sec, usec = self._timestamps(ticks, interface)
        meta = np.empty((len(at), 4), dtype="=u4")
        meta[:, 0] = sec.astype(np.uint32)  # libpcap's seconds, as pcapy hands them on: modulo 2^32
        meta[:, 1] = usec
        meta[:, 2] = at + _EPB_HEAD
        meta[:, 3] = caplen
        wire = np.maximum(head[:, 6], caplen).astype("=u4")
        return (meta, wire, int(at[-1]) + _EPB_HEAD + int(caplen[-1])), first_bad

    def _timestamps(self, ticks: np.ndarray, interface: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Seconds and microseconds as libpcap computes them, in 64-bit unsigned arithmetic (an
        offset before the epoch wraps as there)."""
        used = self._interfaces if len(set(self._interfaces)) > 1 else self._interfaces[:1]
        u64 = np.uint64
        if len(used) == 1:
            one = used[0]
            per, offset, (mul, div) = u64(one.ticks), u64(one.offset % 2**64), (u64(one.scale[0]), u64(one.scale[1]))
        else:
            def column(values: list[int]) -> np.ndarray:
                return np.array(values, dtype=np.uint64).take(interface)

            per = column([i.ticks for i in used])
            offset = column([i.offset % 2**64 for i in used])
            mul, div = column([i.scale[0] for i in used]), column([i.scale[1] for i in used])
        sec, frac = np.divmod(ticks, per)
        return sec + offset, frac * mul // div

    def _hand_over(self) -> None:
        self.handed_over = True

    def _release(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None
            self.source = None

    def close(self) -> None:
        self._release()
        self._f.close()
