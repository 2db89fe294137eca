"""The aggregator's events as the outputs process receives them: packed bytes, parsed on demand.

The aggregator has already formatted every event as its log line, so it hands over those bytes
and the events' epoch seconds (one record per batch), never a Python object per event: pickling
events cost it more than writing the log. The outputs process splits a record into lines only
when some output has room for them, and parses lines back into events (csv, in C) only where an
output needs the fields: to filter by severity or throttle before queueing, or to encode after
its receiver accepted a connection. A dead receiver's full queue costs a count, not a parse.

Parsed events carry the log line's values: CR/LF already flattened, `-` read as empty.
"""

from __future__ import annotations

import csv
import struct
from array import array
from collections.abc import Iterable, Sequence
from functools import cached_property

from engine.eventlog import LINE_DIALECT, Event

HEADER = struct.Struct("<II")  # events, bytes of lines
SEC_BYTES = 8


def record(secs: Sequence[int], lines: Sequence[str]) -> bytes:
    """One batch: header, the seconds (int64), then the lines (each ending with a newline)."""
    text = "".join(lines).encode("utf-8", "surrogateescape")
    return HEADER.pack(len(secs), len(text)) + array("q", secs).tobytes() + text


class Batch:
    """One record on the outputs side; `lines` and `events` are computed once, when first used."""

    def __init__(self, secs: array, text: bytes) -> None:
        self.secs = secs
        self.text = text

    def __len__(self) -> int:
        return len(self.secs)

    @cached_property
    def lines(self) -> list[bytes]:
        """Each event's log line, without its newline."""
        return self.text.split(b"\n")[:-1]

    @cached_property
    def events(self) -> list[Event]:
        return parse_events(zip(self.secs, self.lines, strict=True))


def batches(message: bytes | memoryview) -> list[Batch]:
    """The records of one ring message (several, when the aggregator had a backlog)."""
    view = memoryview(message)
    out = []
    pos = 0
    while pos < len(view):
        count, size = HEADER.unpack_from(view, pos)
        pos += HEADER.size
        secs = array("q")
        secs.frombytes(view[pos:pos + count * SEC_BYTES])
        pos += count * SEC_BYTES
        out.append(Batch(secs, bytes(view[pos:pos + size])))
        pos += size
    return out


def _port(text: str) -> int | None:
    return None if text == "-" else int(text)


def _text(value: str) -> str:
    return "" if value == "-" else value


def parse_events(items: Iterable[tuple[int, bytes]]) -> list[Event]:
    """(epoch seconds, log line) pairs -> events; the microseconds come from the line's timestamp."""
    pairs = list(items)
    rows = csv.reader([line.decode("utf-8", "surrogateescape") for _, line in pairs], **LINE_DIALECT)
    events: list[Event] = []
    for (sec, _), (stamp, _sensor, src, sport, dst, dport, proto, kind, trail, info, ref) in zip(pairs, rows,
                                                                                                 strict=True):
        events.append((sec, int(stamp[-6:]), _text(src), _port(sport), _text(dst), _port(dport), _text(proto),
                       _text(kind), _text(trail), _text(info), _text(ref)))
    return events
