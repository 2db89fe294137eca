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
        self.seconds: dict[str, tuple[float, int]] = {}  # whole-second text -> `whole`: a bulk caller's lookup

    def whole(self, text: str) -> tuple[float, int] | None:
        """(epoch seconds, hour) of a whole-second `YYYY-MM-DD HH:MM:SS` whose digits are in place
        (as `scan` gives it), or None if invalid. A new second of a known hour costs no regex."""
        known = self.seconds.get(text)
        if known is not None:
            return known
        base = self._hours.get(text[:13])
        minute, second = int(text[14:16]), int(text[17:19])
        if base is None or minute > 59 or second > 60:
            return self.parse(text)
        if len(self.seconds) > 65536:
            self.seconds.clear()
        known = self.seconds[text] = (base + minute * 60 + second, int(text[11:13]))
        return known

    def parse(self, text: str) -> tuple[float, int] | None:
        known = self.seconds.get(text[:19])
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
        if len(self.seconds) > 65536:
            self.seconds.clear()
        self.seconds[text[:19]] = whole
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
    try:
        for row in reader:
            if reader.line_num - done == 1:
                yield _event(row, times)
            else:
                for line in lines[done:reader.line_num]:
                    yield parse_other(line, times)
            done = reader.line_num
    except csv.Error:  # e.g. a bare CR inside a line: the rest line by line, that one malformed
        for line in lines[done:]:
            yield parse_other(line, times)
        return
    for _ in range(done, len(lines)):
        yield None


# One event line in its plain form: a quoted timestamp with microseconds, seven bare tokens, then
# trail, info and reference bare or quoted without inner quotes, every value at most MAX_FIELD long.
# Anything else (the second alternative: the whole line) is read by the csv reader.
_BARE = rf'([^ "\r\n]{{1,{MAX_FIELD}}})'
_ANY = rf'("[^"\r\n]{{0,{MAX_FIELD}}}"|[^ "\r\n]{{1,{MAX_FIELD}}})'
PLAIN_LINE = re.compile(r'^"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{6})" ' + " ".join([_BARE] * 7 + [_ANY] * 3)
                        + r'$|^(.*)$', re.M)


def scan(text: str) -> list[tuple[str, ...]]:
    """The lines of `text` (no final newline) in one C pass: per line a 13-tuple: timestamp to the
    second, microseconds, the ten raw fields (trail, info and reference may keep their quotes;
    `-` still stands for empty), and '' - or, for a line off the plain form, twelve '' and the line
    for `parse_other`. Callers of the bulk path must treat both forms as `parse_lines` would."""
    return PLAIN_LINE.findall(text)


def parse_other(line: str, times: TimeParser) -> ParsedEvent | None:
    """A line `scan` left to the csv reader, read exactly as `parse_lines` reads it (a line the
    reader refuses, such as one with a bare CR, is malformed)."""
    try:
        return _event(next(csv.reader((line,), **LINE_DIALECT), []), times)
    except csv.Error:
        return None


def unquote(value: str) -> str:
    """A raw `scan` value as `parse_lines` gives it: quotes dropped, `-` empty."""
    if value[:1] == '"':
        value = value[1:-1]
    return "" if value == "-" else value


def parse_line(line: str) -> ParsedEvent | None:
    """A single line (tests, hunt samples); bulk work should use `parse_lines`."""
    if "\n" in line.rstrip("\n") or "\r" in line:
        return None
    return next(parse_lines([line.rstrip("\n")]), None)
