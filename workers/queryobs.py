"""DNS query observations in columns: the queries of a batch that count against an exhaustion
domain travel to the aggregator as one item of packed columns, not a tuple each. Building, pickling
and unpickling a 9-tuple per query cost more than the query's own checks; here the numbers are one
bytes object and the (prefix, domain) pairs one text, and the aggregator reads only what the
exhaustion bookkeeping needs (row, second, domain, prefix) for every query, the rest (microseconds,
addresses, ports, name) for the rare query that reports. The text is the names joined by line
breaks with each one's cut dot (before its domain) made a line break too: one numpy write for the
batch, where cutting each name in two and joining the pieces cost a split and two strings a name."""

from __future__ import annotations

import numpy as np

from engine.ipaddr import Addr
from workers.batch import Parsed, row_addresses

Packed = tuple[bytes, str, tuple[list, list] | None]  # numbers, prefixes and domains in turn, IPv6-aware addresses
_SEPARATOR = "\n"  # no name that counts against a domain holds one: such names are valid DNS names
_COLUMNS = 7  # rows, seconds, microseconds, source ports, destination ports, IPv4 sources, IPv4 destinations


def pack(p: Parsed, rows: np.ndarray, names: list[str], cuts: np.ndarray) -> Packed:
    """The observations of the queries at ascending `rows`: their (valid, so ASCII) names, and where
    each one's exhaustion domain starts (after a dot: `cuts` are positive)."""
    text = _SEPARATOR.join(names)
    raw = np.frombuffer(text.encode(), np.uint8).copy()
    lengths = np.fromiter(map(len, names), np.int64, len(names))
    raw[lengths.cumsum() - lengths + np.arange(len(names)) + cuts - 1] = ord(_SEPARATOR)  # start + cut - 1
    numbers = np.empty((_COLUMNS, rows.size), np.uint32)
    numbers[0] = rows
    for k, column in enumerate((p.sec, p.usec, p.sport, p.dport, p.src4, p.dst4), 1):
        numbers[k] = column.take(rows)
    addresses = row_addresses(p, rows) if p.v6_rows.size and (p.version.take(rows) == 6).any() else None
    return numbers.tobytes(), raw.tobytes().decode(), addresses


class QueryColumns:
    """A packed item read back (`pack`): rows, seconds, domains and prefixes as lists; a query's
    other fields on demand (`packet`)."""

    __slots__ = ("rows", "secs", "domains", "prefixes", "_numbers", "_addresses")

    def __init__(self, packed: Packed) -> None:
        numbers, text, self._addresses = packed
        pieces = text.split(_SEPARATOR) if text else []
        self.prefixes, self.domains = pieces[0::2], pieces[1::2]
        n = len(self.domains)
        self._numbers = memoryview(numbers).cast("I")
        self.rows: list[int] = self._numbers[:n].tolist()
        self.secs: list[int] = self._numbers[n:2 * n].tolist()

    def packet(self, i: int) -> tuple[int, Addr, int, Addr, int, str]:
        """Query i's microseconds, source, source port, destination, destination port and name, as
        `Heuristics.dns_query` takes them after the second."""
        m, n = self._numbers, len(self.rows)
        if self._addresses is None:
            src, dst = m[5 * n + i], m[6 * n + i]
        else:
            src, dst = self._addresses[0][i], self._addresses[1][i]
        return m[2 * n + i], src, m[3 * n + i], dst, m[4 * n + i], f"{self.prefixes[i]}.{self.domains[i]}"
