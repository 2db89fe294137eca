"""A read lease on a replayed capture file, so that the workers may map it instead of a copy.

A process that maps a file dies of SIGBUS when the file is truncated under it. A read lease
(`fcntl(F_SETLEASE, F_RDLCK)`) is granted only while no process has the file open for writing,
and a later open for writing, or a truncate, then waits until the holder lets go (at most
/proc/sys/fs/lease-break-time, 45 s by default). The replay asks `broken` before each batch,
lets the workers finish what they mapped, and releases the lease (`release`): the writer goes
on and the rest of the file is read with copies. No lease (another user's file, one still being
written, a filesystem without leases, a caller off the main thread) means copies throughout.

The kernel announces a break with SIGIO, whose default action ends the process: while a lease
is held SIGIO is ignored, and `broken` asks the kernel instead (one fcntl a batch).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import mmap
import os
import signal
import stat
import threading
from collections.abc import Iterator
from typing import Any

from shm.filemap import FileRef

_leases = 0  # leases held in this process
_previous: Any = None  # SIGIO's disposition before the first
_SERIALS = itertools.count(1)  # mapped files of this process, told apart in the slots


class ReadLease:
    """The read lease on one open file descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._held = True

    @classmethod
    def take(cls, fd: int) -> ReadLease | None:
        """The lease on `fd` (opened read-only), or None where the kernel or the caller cannot have one."""
        global _leases, _previous
        if threading.current_thread() is not threading.main_thread():
            return None  # SIGIO's disposition can only be set there
        if not _leases:
            _previous = signal.signal(signal.SIGIO, signal.SIG_IGN)
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        except OSError:
            if not _leases:
                signal.signal(signal.SIGIO, _previous)
            return None
        _leases += 1
        return cls(fd)

    @property
    def broken(self) -> bool:
        """Someone waits to write or truncate the file (the kernel breaks leases for them)."""
        return fcntl.fcntl(self.fd, fcntl.F_GETLEASE) != fcntl.F_RDLCK

    def release(self) -> None:
        """Let go (once); the file must not be mapped anywhere any more."""
        global _leases
        if not self._held:
            return
        self._held = False
        with contextlib.suppress(OSError):  # the kernel took it back (the break timed out) or fd is closed
            fcntl.fcntl(self.fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        _leases -= 1
        if not _leases:
            signal.signal(signal.SIGIO, _previous)


def lease_to_map(fd: int) -> tuple[ReadLease, FileRef] | None:
    """A read lease on the open file `fd` and how the workers name it (`shm.filemap`), or None
    where they could not map it: not a regular file, not reachable through /proc/PID/fd (the
    workers open it there), or no lease to be had."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return None
    try:
        os.close(os.open(f"/proc/{os.getpid()}/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC))
    except OSError:
        return None
    lease = ReadLease.take(fd)
    return None if lease is None else (lease, FileRef(os.getpid(), fd, next(_SERIALS)))


@contextlib.contextmanager
def mapped_stretch(fd: int, start: int, end: int) -> Iterator[memoryview]:
    """The leased file's bytes `start:end`, mapped (pages read in at once) for as long as the
    block runs: the capture walks a batch's records there, where the workers map them next."""
    base = start - start % mmap.ALLOCATIONGRANULARITY
    window = mmap.mmap(fd, end - base, mmap.MAP_SHARED | mmap.MAP_POPULATE, mmap.PROT_READ, offset=base)
    view = memoryview(window)[start - base :]
    try:
        yield view
    finally:
        view.release()
        with contextlib.suppress(BufferError):  # a view in a traceback: unmapped with it
            window.close()
