"""Layout of one packet batch inside a ring slot.

`[u64 seq][u32 n][u32 linktype][u64 data_len][u64 generation][data][pad to 8][n x 4 u32 meta]
[n u32 wirelen]`. `generation` is the trail index the worker must match the batch with: the
capture assigns it, so a reload takes effect at one capture position whatever the worker count
(an empty batch only carries a newer generation to a worker that gets no packets). `meta` rows
are (sec, usec, offset, caplen) as pcapy-ng's `next_batch` delivers them, with offsets relative
to `data`. The packet bytes come first so that a replay can copy each small read into the slot
as it arrives (`SlotWriter`), while the read is still in the CPU cache, without knowing how many
packets the slot will hold; a worker reads the batch back as numpy views of the slot (no copy).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

_HEAD = struct.Struct("<QIIQQ")
PER_PACKET_BYTES = 20  # meta row + wire length


@dataclass
class PacketBatch:
    """A batch as numpy views of the slot (valid until the slot is released)."""

    seq: int
    generation: int
    linktype: int
    meta: np.ndarray  # (n, 4) uint32: sec, usec, offset, caplen
    wirelen: np.ndarray  # (n,) uint32
    data: np.ndarray  # uint8

    def __len__(self) -> int:
        return len(self.wirelen)


def batch_bytes(n: int, data_len: int) -> int:
    return _HEAD.size + (data_len + 7) // 8 * 8 + n * PER_PACKET_BYTES


class SlotWriter:
    """A batch written into one slot piece by piece: each piece's packet bytes are copied in at
    once, its columns when the batch is finished."""

    def __init__(self, buf: memoryview, off: int, room: int) -> None:
        self.buf, self.off, self.room = buf, off, room
        self.data_len = 0
        self.n = 0
        self._pieces: list[tuple[np.ndarray, np.ndarray, int]] = []  # meta, wirelen, data offset

    def fits(self, n: int, data_len: int) -> bool:
        return batch_bytes(self.n + n, self.data_len + data_len) <= self.room

    def add(self, meta: np.ndarray, wirelen: np.ndarray, data: bytes | memoryview) -> None:
        """Append packets whose `meta` offsets are relative to `data` (the caller checked `fits`)."""
        start = self.off + _HEAD.size + self.data_len
        self.buf[start : start + len(data)] = data
        self._pieces.append((meta, wirelen, self.data_len))
        self.data_len += len(data)
        self.n += len(wirelen)

    def finish(self, seq: int, linktype: int, generation: int) -> int:
        """Write the columns and the header; returns the bytes used."""
        n, buf = self.n, self.buf
        _HEAD.pack_into(buf, self.off, seq, n, linktype, self.data_len, generation)
        pos = self.off + _HEAD.size + (self.data_len + 7) // 8 * 8
        meta = np.ndarray((n, 4), dtype="<u4", buffer=buf, offset=pos)
        wirelen = np.ndarray((n,), dtype="<u4", buffer=buf, offset=pos + n * 16)
        row = 0
        for piece_meta, piece_wirelen, base in self._pieces:
            k = len(piece_wirelen)
            meta[row : row + k] = piece_meta
            if base:
                meta[row : row + k, 2] += np.uint32(base)
            wirelen[row : row + k] = piece_wirelen
            row += k
        return pos + n * PER_PACKET_BYTES - self.off


def write_batch(
    buf: memoryview,
    off: int,
    seq: int,
    linktype: int,
    meta: np.ndarray,
    wirelen: np.ndarray,
    data: bytes | memoryview,
    generation: int = 1,
) -> int:
    """Write into `buf` at `off`; returns the bytes used. `meta` offsets must be relative to `data`."""
    writer = SlotWriter(buf, off, len(buf) - off)
    writer.add(meta, wirelen, data)
    return writer.finish(seq, linktype, generation)


def read_batch(buf: memoryview, off: int) -> PacketBatch:
    seq, n, linktype, data_len, generation = _HEAD.unpack_from(buf, off)
    pos = off + _HEAD.size
    data = np.ndarray((data_len,), dtype=np.uint8, buffer=buf, offset=pos)
    pos += (data_len + 7) // 8 * 8
    meta = np.ndarray((n, 4), dtype="<u4", buffer=buf, offset=pos)
    wirelen = np.ndarray((n,), dtype="<u4", buffer=buf, offset=pos + n * 16)
    return PacketBatch(seq, generation, linktype, meta, wirelen, data)
