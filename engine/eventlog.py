"""Maltrail's event line and the daily log files (`LOG_DIR/YYYY-MM-DD.log`).

The line format is a contract with existing SOC scripts and Maltrail's server: 11 fields joined by
single spaces, `-` for empty values (and port 0), CR/LF flattened, quoted when a field holds a
space or a double quote. The aggregator is the only writer, so lines never interleave.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

# (sec, usec, src_ip, src_port, dst_ip, dst_port, proto, type, trail, info, reference)
Event = tuple[int, int, str, int | None, str, int | None, str, str, str, str, str]
# How `csv.reader` reads the lines back (`-` then stands for an empty value).
LINE_DIALECT = {"delimiter": " ", "quotechar": '"', "doublequote": True, "strict": False}


def safe_value(value: object) -> str:
    text = str(value or "-")
    if "\r" in text or "\n" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    if " " in text or '"' in text:
        text = '"' + text.replace('"', '""') + '"'
    return text


def timestamp_text(sec: int, usec: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sec)) + f".{usec:06d}"


def format_event(event: Event, sensor: str) -> str:
    sec, usec, *fields = event
    return " ".join([safe_value(timestamp_text(sec, usec)), safe_value(sensor), *map(safe_value, fields)]) + "\n"


def log_date(sec: int) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(sec))


class DailyLog:
    """Appends event lines to the file of each event's local date."""

    def __init__(self, log_dir: Path, sensor: str) -> None:
        self.log_dir = Path(log_dir)
        self.sensor = sensor
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._fds: dict[str, int] = {}

    def path_for(self, date: str) -> Path:
        return self.log_dir / f"{date}.log"

    def _fd(self, date: str) -> int:
        fd = self._fds.get(date)
        if fd is None:
            if len(self._fds) >= 4:
                os.close(self._fds.pop(next(iter(self._fds))))
            fd = os.open(self.path_for(date), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._fds[date] = fd
        return fd

    def write(self, events: Sequence[Event], lines: Sequence[str] | None = None) -> int:
        """Write the events (grouped per day, one write() per group); returns lines written.
        `lines`: the events already formatted (the aggregator shares them with the outputs)."""
        if lines is None:
            lines = [format_event(ev, self.sensor) for ev in events]
        per_day: dict[str, list[str]] = {}
        count = 0
        for ev, line in zip(events, lines, strict=True):
            per_day.setdefault(log_date(ev[0]), []).append(line)
            count += 1
        for date, lines in per_day.items():
            data = "".join(lines).encode("utf-8", "surrogateescape")
            fd = self._fd(date)
            while data:
                written = os.write(fd, data)
                data = data[written:]
        return count

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
