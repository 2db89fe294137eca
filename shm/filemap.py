"""Stretches of a replayed capture file, mapped by a worker instead of copied into its ring slot.

A replay of a pcap or pcapng file that the capture holds a read lease on (`engine.filelease`) sends
each batch's columns and where its packets lie in the file; the worker maps that stretch (the
kernel's page cache, no copy) for as long as it works on the batch. Copying every packet into the
slot was a third of the capture's CPU, and on two cores the capture shares them with the workers.
The worker opens the file through the capture's own descriptor (`/proc/PID/fd/N`), so a file
renamed or replaced meanwhile is still the one the capture read.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FileRef:
    """A file the capture process has open: its descriptor there, and a serial number that tells
    a descriptor number reused for a later file apart."""

    pid: int
    fd: int
    serial: int


class FileWindows:
    """The worker's end: the file of the current replay, and a map of each batch's stretch."""

    def __init__(self) -> None:
        self._ref: FileRef | None = None
        self._fd = -1

    def view(self, ref: FileRef, offset: int, length: int) -> np.ndarray:
        """`length` bytes of the file from `offset`, read-only; unmapped when the last view goes."""
        if ref != self._ref:
            self.close()
            try:
                self._fd = os.open(f"/proc/{ref.pid}/fd/{ref.fd}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot open the replayed capture file (descriptor {ref.fd} of "
                                         f"process {ref.pid}): {exc.strerror}") from None
            self._ref = ref
        base = offset - offset % mmap.ALLOCATIONGRANULARITY
        window = mmap.mmap(self._fd, offset + length - base, mmap.MAP_SHARED | mmap.MAP_POPULATE, mmap.PROT_READ,
                           offset=base)  # populated: the batch's parse touches every page
        return np.frombuffer(window, dtype=np.uint8, count=length, offset=offset - base)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._ref = None
