"""DNS over a whole batch with numpy: header flags, the first question and the first A answer.

Almost every DNS message on a link is plain: one question with an uncompressed name, answers
whose owners are compression pointers. Those are decoded here for all rows at once, so that a
query costs a few dictionary operations in Python and a response usually costs none. Everything
else (a pointer in the question, several questions, an owner name spelled out, anything cut short
or oversized) is left to the per-message parser in `workers.protocols.dns`, which has the last word.

The answer walk does not validate where owner pointers lead; the per-message parser does. So the
first A address found here is a candidate: the caller re-parses the rare message whose candidate
is a trail before reporting anything.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from engine.index.namefilter import NameBytes
from workers.batch import Gather
from workers.protocols.dns import MAX_ANSWERS, MAX_NAME_WIRE_LENGTH

HEADER = 12
_MAX_LABELS = MAX_NAME_WIRE_LENGTH // 2 + 1
_LINE_BREAK = 10


def _flag_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per value of the header's flag word (byte 2 high, byte 3 low): whether the message is a
    standard query, whether it is an NXDOMAIN answer as the flood heuristic counts them (byte 3
    0x83; the names of both are wanted), and whether it is an answer without error; one take of a
    table answers each for a whole batch."""
    flags = np.arange(1 << 16)
    return (flags >> 8 & 0xFA) == 0, (flags & 0x8000 != 0) & (flags & 0xFF == 0x83), (flags & 0x8000 != 0) & (
        flags & 0xFF == 0x80)


_ASKED, _NX, _ANSWERED = _flag_tables()
_OWNER_SIZE = np.full(256, 1 << 40, np.int64)  # per first byte of an answer's owner: its bytes when a pointer or
_OWNER_SIZE[0], _OWNER_SIZE[0xC0:] = 1, 2  # the root; else so many that the record ends past any message
_ADVANCE = np.zeros(256, np.int64)  # per byte where a label's length is read: the label's bytes with it, 0 if it is
_ADVANCE[1:0x40] = np.arange(2, 0x41)  # not a label length (the root, a pointer, a reserved form)
_SPELLED = np.zeros(256, bool)  # a label length: the owner is spelled out
_SPELLED[1:0x40] = True


@dataclass(slots=True)
class DnsBatch:
    """Decoded rows (positions into the rows given to `decode`) and the rows left to the parser."""

    fast: np.ndarray  # int64 positions of decoded messages
    slow: np.ndarray  # int64 positions for the per-message parser
    flags: np.ndarray  # per fast row: the header's flag word (byte 2 high, byte 3 low)
    queries: np.ndarray  # positions (in `fast`) of the standard queries
    nx: np.ndarray  # positions (in `fast`) of the NXDOMAIN answers (`_NX`)
    query_names: list[str]  # the names of `queries`, in order: lowercased (ASCII letters), latin-1
    # decoded, "" for the root
    nx_names: list[str]  # the names of `nx`, likewise
    lines: tuple[np.ndarray, np.ndarray] | None  # the bytes of `query_names` then `nx_names`, when all are
    # ASCII on one line: each followed by a line break, and the n+1 offsets where they start
    answer_a: np.ndarray  # uint32 first A address candidate (valid where has_a)
    has_a: np.ndarray  # bool: an answer without error (byte 3 0x80) whose walk found an A record
    gather: Gather  # the batch's bytes, for `types`
    tail_at: np.ndarray  # per fast row: where the question's QTYPE and QCLASS are

    def types(self, picks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """QTYPE and QCLASS of the fast rows at `picks`, read when asked: a batch of queries needs
        them only for the few that may report."""
        tail = self.gather.be32(self.tail_at.take(picks))
        return tail >> 16, tail & 0xFFFF

    def named(self) -> NameBytes | None:
        """The bytes of `query_names` then `nx_names` as the bulk name checks read them (when
        `lines` has them)."""
        if self.lines is None:
            return None
        buf, bounds = self.lines
        return NameBytes.at(buf[:-1], bounds[:-1], bounds[1:] - 1)


def decode(data: np.ndarray, off: np.ndarray, length: np.ndarray, want_answers: bool) -> DnsBatch:
    """Decode the DNS payloads at `off`/`length` (int64 arrays) of the batch buffer `data`."""
    g = Gather(data if len(data) >= 4 else np.zeros(4, np.uint8))  # the word views need 4 bytes
    d = g.data
    # a big-endian word at every offset: indexing reads one per row (faster than `take` on a strided view)
    be16 = np.ndarray((len(d) - 1,), ">u2", d, strides=(1,))
    n = len(off)
    end = np.minimum(off + length, len(d))  # the reads of decoded rows stay below `end`
    slow = (length < HEADER + 5) | (be16[np.minimum(off + 4, len(be16) - 1)] != 1)  # QDCOUNT
    name_end, seps = _question_names(d, off + HEADER, end, slow)
    slow |= name_end + 5 > end
    fast = (~slow).nonzero()[0]
    head = off[fast]
    start, stop = head + HEADER + 1, name_end[fast]
    flags = be16[head + 2].astype(np.int32)
    asked = _ASKED.take(flags)
    if asked.all():  # all standard queries: no NXDOMAIN answers among them, no order to make
        queries, nx = np.arange(fast.size), np.zeros(0, np.int64)
        query_names, lines = _names(d, start, stop, seps, fast, n)
        nx_names: list[str] = []
    else:  # the queries first, so that their bytes lead the buffer, then the NXDOMAIN answers
        queries, nx = asked.nonzero()[0], _NX.take(flags).nonzero()[0]
        order = np.concatenate((queries, nx))
        names, lines = _names(d, start.take(order), stop.take(order), seps, fast.take(order), n)
        query_names, nx_names = names[: queries.size], names[queries.size :]
    answer_a = np.zeros(fast.size, np.uint32)
    has_a = np.zeros(fast.size, bool)
    if want_answers:
        ancount = be16[head + 6]
        wanted = (_ANSWERED.take(flags) & (ancount > 0)).nonzero()[0]
        if wanted.size:
            a, found, unknown = _first_a(g, stop.take(wanted) + 5, end.take(fast.take(wanted)), ancount.take(wanted))
            answer_a[wanted], has_a[wanted] = a, found
            if unknown.any():  # answers with a spelled-out owner: neither queries nor NXDOMAIN answers
                back = np.zeros(fast.size, bool)
                back[wanted[unknown]] = True
                slow[fast[back]] = True
                keep = ~back
                fast, flags = fast[keep], flags[keep]
                stop = stop[keep]
                answer_a, has_a = answer_a[keep], has_a[keep]
                queries, nx = _ASKED.take(flags).nonzero()[0], _NX.take(flags).nonzero()[0]
    return DnsBatch(fast, slow.nonzero()[0], flags, queries, nx, query_names, nx_names, lines, answer_a, has_a, g,
                    stop + 1)


def _question_names(d: np.ndarray, pos0: np.ndarray, end: np.ndarray, slow: np.ndarray
                    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Walk the first question's labels for every row at once; rows that are not plain go slow.

    Returns the offset of each name's root byte and the (row, offset) of every inner length byte,
    which becomes a dot in the text form. Each step carries only the rows still walking, and the
    wire-length limit and the message's end bound where the root byte may be (a walk that passes
    them goes on, as far as `_MAX_LABELS` steps, and ends slow), so a step is eight numpy calls."""
    name_end = pos0.copy()
    bound = np.minimum(end, pos0 + MAX_NAME_WIRE_LENGTH)
    rows = (~slow).nonzero()[0]
    p = pos0.take(rows)
    sep_rows: list[np.ndarray] = []
    sep_pos: list[np.ndarray] = []
    for step in range(_MAX_LABELS):
        if not rows.size:
            break
        name_end[rows] = p
        advance = _ADVANCE.take(d.take(p, mode="clip"))
        go = advance.nonzero()[0]
        rows, p = rows.take(go), p.take(go)
        if step:
            sep_rows.append(rows)
            sep_pos.append(p)
        p = p + advance.take(go)
    slow[rows] = True  # more labels than any legal name holds
    left = (~slow).nonzero()[0]  # the others stopped on a byte that is not a length: the root, or not plain
    at = name_end[left]
    slow[left] = (at >= bound[left]) | (d.take(at, mode="clip") != 0)
    seps = (np.concatenate(sep_rows) if sep_rows else np.zeros(0, np.int64),
            np.concatenate(sep_pos) if sep_pos else np.zeros(0, np.int64))
    return name_end, seps


def _names(d: np.ndarray, start: np.ndarray, stop: np.ndarray, seps: tuple[np.ndarray, np.ndarray],
           fast: np.ndarray, n: int) -> tuple[list[str], tuple[np.ndarray, np.ndarray] | None]:
    """The dotted text of the names of the `fast` rows given (in any order), from one gather and
    one decode: each name followed by a line break, which one split cuts at (a name holding a line
    break itself, which DNS allows, makes it cut them by position instead). With them their bytes
    and bounds (`DnsBatch.lines`), when all are ASCII on one line. `bytes.lower` lowers ASCII
    letters alone, as a table would, for half a table's `take`."""
    if not fast.size:
        return [], None
    spans = np.maximum(stop - start, 0) + 1  # the root name has no text; each name its line break
    bounds = np.zeros(fast.size + 1, np.int64)
    spans.cumsum(out=bounds[1:])
    flat = (start - bounds[:-1]).repeat(spans) + np.arange(bounds[-1])
    buf = d.take(flat, mode="clip")
    rows, positions = seps  # a separator's place in `buf` is its offset plus its row's shift; the
    # separators of rows not given land (clipped) on the last line break, which is written after them
    shift = np.full(n, 1 << 40, np.int64)
    shift[fast] = bounds[:-1] - start
    np.put(buf, positions + shift.take(rows), ord("."), mode="clip")
    buf[bounds[1:] - 1] = _LINE_BREAK
    lowered = buf.tobytes().lower()
    text = lowered.decode("latin-1")
    names = text[:-1].split("\n")
    if len(names) != fast.size:
        b = bounds.tolist()
        return [text[i : j - 1] for i, j in itertools.pairwise(b)], None
    return names, (np.frombuffer(lowered, np.uint8), bounds) if text.isascii() else None


def _first_a(g: Gather, pos: np.ndarray, end: np.ndarray, count: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first A record among the answers: (address, found, unknown) per row. Owners must be a
    pointer or the root; a spelled-out owner leaves the row `unknown` (for the parser). The owner's
    size comes from a table (one too big to end in the message for an owner that is neither a
    pointer nor the root) and a record's type and RDLENGTH from word reads: a step is under forty
    numpy calls. Reads past `end` are garbage that no test lets through (`stop <= e` implies them
    all in bounds)."""
    n = len(pos)
    addr = np.zeros(n, np.uint32)
    found = np.zeros(n, bool)
    unknown = np.zeros(n, bool)
    active = np.arange(n)
    for step in range(MAX_ANSWERS):
        active = active[count.take(active) > step]
        if not active.size:
            break
        p, e = pos.take(active), end.take(active)
        first = g.data.take(p, mode="clip")
        spelled = _SPELLED.take(first)
        if spelled.any():
            unknown[active[spelled & (p < e)]] = True
        fixed = p + _OWNER_SIZE.take(first)  # the record's TYPE
        rdata = fixed + 10
        rdlength = g.be32(fixed + 6) & 0xFFFF
        stop = rdata + rdlength
        ok = stop <= e  # a pointer or the root for an owner (`_OWNER_SIZE`), and p < e: fixed > p
        is_a = ok & (rdlength == 4) & (g.be32(fixed) >> 16 == 1)
        hit = active[is_a]
        addr[hit] = g.be32(rdata[is_a])
        found[hit] = True
        go = ok & ~is_a
        active = active[go]
        pos[active] = stop[go]
    return addr, found, unknown
