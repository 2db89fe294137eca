"""The index container: named numpy arrays in one file, mapped read-only by every process.

Layout: 8-byte magic, little-endian u64 header length, a JSON header (array table and metadata),
then each array at a 64-byte aligned offset. Mapping the file gives numpy views over the page
cache, so N processes share one copy and each touches only the pages its lookups need.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"MTIDX\x00\x01\x00"
_ALIGN = 64


class IndexFormatError(Exception):
    """The file is not an index this version can read."""


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def write_arrays(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write the container next to `path` and rename it into place: never a half-written index."""
    table: dict[str, dict[str, Any]] = {}
    offset = 0
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        arrays[name] = arr
        table[name] = {"offset": offset, "dtype": arr.dtype.str, "shape": list(arr.shape)}
        offset = _aligned(offset + arr.nbytes)
    header = json.dumps({"arrays": table, "meta": meta}, separators=(",", ":")).encode()
    data_start = _aligned(len(MAGIC) + 8 + len(header))
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(MAGIC + struct.pack("<Q", len(header)) + header)
            out.write(b"\0" * (data_start - out.tell()))
            for name, arr in arrays.items():
                pos = data_start + table[name]["offset"]
                out.write(b"\0" * (pos - out.tell()))
                out.write(memoryview(arr).cast("B"))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def is_index_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_meta(path: Path) -> dict[str, Any]:
    """An index's metadata from its header alone (nothing mapped)."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise IndexFormatError(f"{path}: not a trail index file (bad magic)")
        (hlen,) = struct.unpack("<Q", f.read(8))
        try:
            return json.loads(f.read(hlen))["meta"]
        except (ValueError, KeyError):
            raise IndexFormatError(f"{path}: unreadable index header") from None


def map_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], mmap.mmap]:
    """Map the file and return read-only views of its arrays (no copy), its metadata and the map."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise IndexFormatError(f"{path}: not a trail index file (bad magic)")
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    data_start = _aligned(len(MAGIC) + 8 + hlen)
    arrays: dict[str, np.ndarray] = {}
    for name, spec in header["arrays"].items():
        dtype = np.dtype(spec["dtype"])
        shape = tuple(spec["shape"])
        count = int(np.prod(shape)) if shape else 1
        start = data_start + spec["offset"]
        if start + count * dtype.itemsize > len(mm):
            raise IndexFormatError(f"{path}: truncated index file (array {name})")
        arrays[name] = np.frombuffer(mm, dtype=dtype, count=count, offset=start).reshape(shape)
    return arrays, header["meta"], mm
