"""Parsing Maltrail event lines (the 11-field format of `engine.eventlog`) back into values.

Lines come from our aggregator or from any Maltrail sensor, so the parser accepts what Maltrail
writes (quoted fields with `""` escapes, `-` for empty) and skips anything else as malformed
instead of guessing. Timestamps are sensor-local time, as in the file names.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Iterator
from typing import NamedTuple

from engine.eventlog import LINE_DIALECT

_TS = re.compile(r"(\d{4}-\d{2}-\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?\Z")
MAX_FIELD = 4096


class ParsedEvent(NamedTuple):
    """One event line. Empty strings where the log has `-`."""

    time: float
    hour: int
    sensor: str
    src_ip: str
    src_port: str
    dst_ip: str
    dst_port: str
    proto: str
    type: str
    trail: str
    info: str
    reference: str


class TimeParser:
    """Local `YYYY-MM-DD HH:MM:SS.ffffff` to epoch seconds. mktime runs once per hour and the
    validated whole-second prefix is cached, so most lines cost one dict lookup."""

    def __init__(self) -> None:
        self._hours: dict[str, float] = {}
        self._seconds: dict[str, tuple[float, int]] = {}

    def parse(self, text: str) -> tuple[float, int] | None:
        known = self._seconds.get(text[:19])
        if known is not None:
            rest = text[19:]
            if not rest:
                return known
            if len(rest) == 7 and rest[0] == "." and rest[1:].isdigit():
                return known[0] + int(rest[1:]) / 1e6, known[1]
        m = _TS.match(text)
        if m is None:
            return None
        date, hh, mm, ss, frac = m.groups()
        hour, minute, second = int(hh), int(mm), int(ss)
        if hour > 23 or minute > 59 or second > 60:
            return None
        key = text[:13]
        base = self._hours.get(key)
        if base is None:
            try:
                y, mo, d = (int(x) for x in date.split("-"))
                base = time.mktime((y, mo, d, hour, 0, 0, 0, 0, -1))
            except (OverflowError, ValueError):
                return None
            if len(self._hours) > 4096:
                self._hours.clear()
            self._hours[key] = base
        whole = (base + minute * 60 + second, hour)
        if len(self._seconds) > 65536:
            self._seconds.clear()
        self._seconds[text[:19]] = whole
        if frac:
            return whole[0] + int(frac) / 10 ** len(frac), hour
        return whole


def _event(row: list[str], times: TimeParser) -> ParsedEvent | None:
    if len(row) != 11:
        return None
    ts = times.parse(row[0])
    if ts is None:
        return None
    return ParsedEvent(ts[0], ts[1], *["" if v == "-" else v[:MAX_FIELD] for v in row[1:]])


def parse_lines(lines: list[str], times: TimeParser | None = None) -> Iterator[ParsedEvent | None]:
    """One result per input line (without its newline): the event, or None for a malformed line.

    One csv reader runs over all lines (fast); a row that swallowed the next lines through an
    unclosed quote is re-read line by line, so a hostile line never hides the lines after it."""
    times = times or TimeParser()
    reader = csv.reader(lines, **LINE_DIALECT)
    done = 0
    for row in reader:
        if reader.line_num - done == 1:
            yield _event(row, times)
        else:
            for line in lines[done:reader.line_num]:
                yield _event(next(csv.reader((line,), **LINE_DIALECT), []), times)
        done = reader.line_num
    for _ in range(done, len(lines)):
        yield None


def parse_line(line: str) -> ParsedEvent | None:
    """A single line (tests, hunt samples); bulk work should use `parse_lines`."""
    if "\n" in line.rstrip("\n") or "\r" in line:
        return None
    return next(parse_lines([line.rstrip("\n")]), None)
