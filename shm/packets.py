"""Layout of one packet batch inside a ring slot.

`[u64 seq][u32 n][u32 linktype][u64 data_len][u64 generation][u64 data_at][n x 4 u32 meta]
[n u32 wirelen][pad to 8]...[data at data_at]`. `generation` is the trail index the worker must
match the batch with: the capture assigns it, so a reload takes effect at one capture position
whatever the worker count (an empty batch only carries a newer generation to a worker that gets
no packets). `meta` rows are (sec, usec, offset, caplen) as pcapy-ng's `next_batch` delivers
them, with offsets relative to the data. The data usually follows the columns; a replay reads a
file straight into the slot at a place fixed before it knows the packet count (`data_at`), and
writes the columns after (`write_columns`). A worker reads a batch back as numpy views of the
slot (no copy).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

_HEAD = struct.Struct("<QIIQQQ")


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
    return columns_end(n) + data_len


def columns_end(n: int) -> int:
    """Where the data of an `n`-packet batch starts when it follows the columns."""
    return _HEAD.size + n * 16 + (n * 4 + 7) // 8 * 8


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
    at = columns_end(len(wirelen))
    buf[off + at : off + at + len(data)] = data
    return write_columns(buf, off, seq, linktype, meta, wirelen, at, len(data), generation)


def write_columns(buf: memoryview, off: int, seq: int, linktype: int, meta: np.ndarray, wirelen: np.ndarray,
                  data_at: int, data_len: int, generation: int = 1) -> int:
    """The header and columns of a batch whose data is already at `off + data_at` (which must not
    be before `columns_end(n)`); returns the bytes used."""
    n = len(wirelen)
    _HEAD.pack_into(buf, off, seq, n, linktype, data_len, generation, data_at)
    pos = off + _HEAD.size
    np.ndarray((n, 4), dtype="<u4", buffer=buf, offset=pos)[:] = meta
    pos += n * 16
    np.ndarray((n,), dtype="<u4", buffer=buf, offset=pos)[:] = wirelen
    return data_at + data_len


def read_batch(buf: memoryview, off: int) -> PacketBatch:
    seq, n, linktype, data_len, generation, data_at = _HEAD.unpack_from(buf, off)
    pos = off + _HEAD.size
    meta = np.ndarray((n, 4), dtype="<u4", buffer=buf, offset=pos)
    wirelen = np.ndarray((n,), dtype="<u4", buffer=buf, offset=pos + n * 16)
    data = np.ndarray((data_len,), dtype=np.uint8, buffer=buf, offset=off + data_at)
    return PacketBatch(seq, generation, linktype, meta, wirelen, data)
