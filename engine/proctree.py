"""A process and its descendants, and what they cost (PSS, CPU time), read from /proc.

PSS splits shared pages among the processes that map them, so the sum over the sensor's tree
is what the sensor really costs: the measure `maltrail bench` and the memory benchmark report.
"""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether the process runs. `kill(pid, 0)` also succeeds on a zombie (dead, not yet reaped
    by its parent), which must count as gone: workers outliving a killed sensor hold its pipes."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True  # no /proc entry to read: trust kill()
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


PSS_PARTS = ("Pss", "Pss_Anon", "Pss_File", "Pss_Shmem")


def pss_parts_kb(pid: int) -> dict[str, int]:
    """PSS and its anonymous, file-backed and shared-memory parts (all 0 once the process has gone):
    a mapped file's pages (the index, code, a replayed capture) are the page cache's, not an
    allocation of the process."""
    parts = dict.fromkeys(PSS_PARTS, 0)
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in parts:
                parts[key] = int(rest.split()[0])
    except OSError:
        pass
    return parts


def pss_kb(pid: int) -> int:
    return pss_parts_kb(pid)["Pss"]


def tree_pss_kb(pid: int) -> dict[int, int]:
    return {p: pss_kb(p) for p in [pid, *descendants(pid)]}


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, tid: int | None = None) -> float | None:
    """User + system CPU of a process (or of one of its threads); None once it has gone."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)
