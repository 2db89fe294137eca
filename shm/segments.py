"""Shared-memory segment ownership: one owner creates and unlinks, everyone else attaches.

The sensor's main process owns every segment and unlinks them in a `finally`, on SIGTERM and at
interpreter exit. If the owner itself is killed, Python's resource tracker (shared by all our
processes) unlinks what is still registered once the last process has gone, and workers exit
as soon as they see their parent vanish, so a crash never leaves a segment in /dev/shm.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
from multiprocessing import shared_memory

PREFIX = "maltrail_"


def new_run_id() -> str:
    return f"{os.getpid()}_{secrets.token_hex(3)}"


def attach(name: str) -> shared_memory.SharedMemory:
    """Attach to an existing segment created by the owner."""
    return shared_memory.SharedMemory(name=name, create=False)


def close_quietly(seg: shared_memory.SharedMemory) -> None:
    """Unmap, tolerating numpy views still alive (the mapping then goes at process exit)."""
    with contextlib.suppress(BufferError, OSError):
        seg.close()


class SegmentOwner:
    """Creates segments for one sensor run and guarantees they are unlinked."""

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id or new_run_id()
        self._segments: dict[str, shared_memory.SharedMemory] = {}
        atexit.register(self.unlink_all)

    def create(self, role: str, size: int) -> shared_memory.SharedMemory:
        name = f"{PREFIX}{self.run_id}_{role}"
        seg = shared_memory.SharedMemory(name=name, create=True, size=size)
        self._segments[name] = seg
        return seg

    @property
    def names(self) -> list[str]:
        return list(self._segments)

    def unlink_all(self) -> None:
        """Idempotent: unlink every segment still owned."""
        while self._segments:
            _, seg = self._segments.popitem()
            with contextlib.suppress(FileNotFoundError):
                seg.unlink()
            close_quietly(seg)
