"""Layout of one packet batch inside a ring slot.

`[u64 seq][u32 n][u32 linktype][u64 data_len][u64 generation][u64 data_at][u32 file pid]
[u32 file fd][u32 file serial][u32 0][n x 4 u32 meta][n u32 wirelen][pad to 8]...[data at
data_at]`. `generation` is the trail index the worker must match the batch with: the capture
assigns it, so a reload takes effect at one capture position whatever the worker count (an empty
batch only carries a newer generation to a worker that gets no packets). `meta` rows are (sec,
usec, offset, caplen) as pcapy-ng's `next_batch` delivers them, with offsets relative to the
data. The data usually follows the columns; a replay reads a file straight into the slot at a
place fixed before it knows the packet count (`data_at`), and writes the columns after
(`write_columns`). A replay of a file the capture holds a lease on sends no data at all:
`data_at` is then where the packets start in that file (named by pid, fd and serial;
`shm.filemap`). A worker reads a batch back as numpy views of the slot or of its map of the file
(no copy).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from shm.filemap import FileRef, FileWindows

_HEAD = struct.Struct("<QIIQQQIIII")


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
                  data_at: int, data_len: int, generation: int = 1, source: FileRef | None = None) -> int:
    """The header and columns of a batch whose data is already at `off + data_at` (which must not
    be before `columns_end(n)`), or at `data_at` in the file `source`; returns the bytes used."""
    n = len(wirelen)
    pid, fd, serial = (source.pid, source.fd, source.serial) if source is not None else (0, 0, 0)
    _HEAD.pack_into(buf, off, seq, n, linktype, data_len, generation, data_at, pid, fd, serial, 0)
    pos = off + _HEAD.size
    np.ndarray((n, 4), dtype="<u4", buffer=buf, offset=pos)[:] = meta
    pos += n * 16
    np.ndarray((n,), dtype="<u4", buffer=buf, offset=pos)[:] = wirelen
    return columns_end(n) if source is not None else data_at + data_len


def read_batch(buf: memoryview, off: int, files: FileWindows | None = None) -> PacketBatch:
    """The batch in the slot at `off`; `files` maps the packets of a batch that points into a file."""
    seq, n, linktype, data_len, generation, data_at, pid, fd, serial, _ = _HEAD.unpack_from(buf, off)
    pos = off + _HEAD.size
    meta = np.ndarray((n, 4), dtype="<u4", buffer=buf, offset=pos)
    wirelen = np.ndarray((n,), dtype="<u4", buffer=buf, offset=pos + n * 16)
    if not pid:
        data = np.ndarray((data_len,), dtype=np.uint8, buffer=buf, offset=off + data_at)
    elif files is None:
        raise ValueError("this batch's packets are in a capture file: read it with FileWindows")
    else:
        data = files.view(FileRef(pid, fd, serial), data_at, data_len)
    return PacketBatch(seq, generation, linktype, meta, wirelen, data)
