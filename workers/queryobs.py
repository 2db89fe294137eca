"""DNS query observations in columns: the queries of a batch that count against an exhaustion
domain travel to the aggregator as one item of packed columns, not a tuple each. Building, pickling
and unpickling a 9-tuple per query cost more than the query's own checks; here the numbers are one
bytes object and the (prefix, domain) pairs one text, and the aggregator reads only what the
exhaustion bookkeeping needs (row, second, domain, prefix) for every query, the rest (microseconds,
addresses, ports, name) for the rare query that reports. The text is the names joined by line
breaks with each one's cut dot (before its domain) made a line break too: one numpy write for the
batch, where cutting each name in two and joining the pieces cost a split and two strings a name.
IPv6 addresses travel for the IPv6 rows alone, with their positions."""

from __future__ import annotations

import numpy as np

from engine.index.namefilter import NameBytes
from engine.ipaddr import Addr
from workers.batch import Parsed, addresses6

Packed = tuple[bytes, str, tuple[list[int], list, list] | None]  # numbers, prefixes and domains in turn, and the
# positions, sources and destinations of the IPv6 rows (None: none)
_SEPARATOR = "\n"  # no name that counts against a domain holds one: such names are valid DNS names
_COLUMNS = 7  # rows, seconds, microseconds, source ports, destination ports, IPv4 sources, IPv4 destinations


def pack(p: Parsed, rows: np.ndarray, names: list[str], cuts: np.ndarray, laid_out: NameBytes | None = None
         ) -> Packed:
    """The observations of the queries at ascending `rows`: their (valid, so ASCII) names, and where
    each one's exhaustion domain starts (after a dot: `cuts` are positive). `laid_out`: the names'
    bytes joined by line breaks, when the caller has them (the DNS decoder's): no join to make."""
    if laid_out is None:
        raw = np.frombuffer(_SEPARATOR.join(names).encode(), np.uint8).copy()
        starts = np.zeros(len(names), np.int64)
        starts[1:] = (raw == ord(_SEPARATOR)).nonzero()[0] + 1  # no name holds one: the separators end them
    else:
        raw, starts = laid_out.buf.copy(), laid_out.starts
    raw[starts + cuts - 1] = ord(_SEPARATOR)
    numbers = np.empty((_COLUMNS, rows.size), np.uint32)
    numbers[0] = rows
    for k, column in enumerate((p.sec, p.usec, p.sport, p.dport, p.src4, p.dst4), 1):
        numbers[k] = column.take(rows)
    v6 = None
    if p.v6_rows.size:
        at = (p.version.take(rows) == 6).nonzero()[0]
        if at.size:
            v6 = (at.tolist(), *addresses6(p, rows.take(at)))
    return numbers.tobytes(), raw.tobytes().decode(), v6


class QueryColumns:
    """A packed item read back (`pack`): rows, seconds, domains and prefixes as lists; a query's
    other fields on demand (`packet`)."""

    __slots__ = ("rows", "secs", "domains", "prefixes", "_numbers", "_v6")

    def __init__(self, packed: Packed) -> None:
        numbers, text, v6 = packed
        self._v6: dict[int, tuple[Addr, Addr]] = {}  # position -> source, destination
        if v6:
            self._v6.update(zip(v6[0], zip(v6[1], v6[2], strict=True), strict=True))
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
        src, dst = self._v6.get(i) or (m[5 * n + i], m[6 * n + i])
        return m[2 * n + i], src, m[3 * n + i], dst, m[4 * n + i], f"{self.prefixes[i]}.{self.domains[i]}"
