"""Shape facts of a batch of domain names from one pass of numpy over their bytes.

The checks of a new name begin with tests of its shape: plain or not, an IP literal, valid for
Maltrail, where its labels start. Asked name by name, each is a regex or a split (0.3–1 µs);
here they come from a character-class table, one prefix sum of packed per-class counts and the
dot positions, for the whole batch at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.index.namefilter import NameBytes
from workers.protocols.dns import IGNORED_QUERY_SUFFIXES, is_ignored_query

IP_ADRESS = ".ip-adress.com"
_FIELD = 12  # bits per character-class count packed in one uint64: five classes, names below 4096 bytes
_NOT_PLAIN, _NOT_NUMERIC, _DIGIT, _UNDERSCORE, _DASH = (np.uint64(_FIELD * k) for k in range(5))
_FIELD_MASK = np.uint64((1 << _FIELD) - 1)
_CLASS_COUNTS = np.full(256, 1 << _NOT_PLAIN | 1 << _NOT_NUMERIC, np.uint64)  # byte -> its packed counts
_CLASS_COUNTS[np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", np.uint8)] = 1 << _NOT_NUMERIC
_CLASS_COUNTS[np.frombuffer(b"0123456789", np.uint8)] = 1 << _DIGIT
_CLASS_COUNTS[ord(".")] = 0
_CLASS_COUNTS[ord("_")] = 1 << _NOT_NUMERIC | 1 << _UNDERSCORE
_CLASS_COUNTS[ord("-")] = 1 << _NOT_NUMERIC | 1 << _DASH
_TRUE = np.ones(1, bool)
_LINE_BREAK = 10


def _label_keys(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A 15-bit key of each label buf[start:end]: the low five bits of its first two bytes (0 for
    a byte it does not have, as `_key_table` pads) and its length (up to 31). Equal labels have
    equal keys; unequal ones may too, so a key in a table is a candidate to confirm. A dozen numpy
    calls for a whole batch."""
    if not buf.size:  # empty names only: `take` has nothing to clip to
        buf = np.zeros(1, np.uint8)
    lengths = ends - starts
    first = np.where(lengths > 0, buf.take(starts, mode="clip"), 0).astype(np.int32)
    second = np.where(lengths > 1, buf.take(starts + 1, mode="clip"), 0).astype(np.int32)
    return (first & 31) << 10 | (second & 31) << 5 | np.minimum(lengths, 31)


def _key_table(labels: frozenset[str]) -> np.ndarray:
    """Per `_label_keys` key: whether one of `labels` has it."""
    table = np.zeros(1 << 15, bool)
    padded = [label.encode() + b"\0\0" for label in labels]
    table[[(raw[0] & 31) << 10 | (raw[1] & 31) << 5 | min(len(raw) - 2, 31) for raw in padded]] = True
    return table


_IGNORED_KEYS = _key_table(IGNORED_QUERY_SUFFIXES)


def _counts(counts: np.ndarray, shift: np.uint64, k: int) -> np.ndarray:
    """Whether the class at `shift` counts `k` in each packed count: a mask and a compare (the
    mask and the count shifted come from a table: numpy scalar arithmetic costs as much as an
    array operation)."""
    mask, shifted = _FIELDS[shift]
    return counts & mask == shifted[k]


_FIELDS = {shift: (_FIELD_MASK << shift, [np.uint64(k) << shift for k in range(4)])  # counts asked: up to 3
           for shift in (_NOT_PLAIN, _NOT_NUMERIC, _DIGIT, _UNDERSCORE, _DASH)}
_PAD = np.full(1, -1, np.int64)  # after a batch's dots: what a name without the dot asked for reads


@dataclass(frozen=True, slots=True)
class NameShapes:
    """Per-name facts of a list of ASCII names.

    plain: only `[a-z0-9._-]`, not empty (the names the bulk walks take); special: the
    `ip-adress.com` and `.onion` relations apply; ip_literal: digits and dots only; valid:
    `is_valid_dns_name`, for plain names; long_first_label: the first label is over 24 characters
    without a dash (the long-domain heuristic's precondition); exhaustion_cut: for plain names,
    where the domain a query counts against for DNS exhaustion starts (0: no such domain; -1: a
    first label of digits and three dashes, which only the rule's pattern can settle); ignored:
    `is_ignored_query`, for plain names."""

    names: list[str]
    laid_out: NameBytes | None  # the names' bytes (`of` only: `take` leaves them out)
    plain: np.ndarray
    special: np.ndarray
    ip_literal: np.ndarray
    valid: np.ndarray
    long_first_label: np.ndarray
    exhaustion_cut: np.ndarray | None  # `of(..., queries=True)` only
    ignored: np.ndarray | None

    @classmethod
    def of(cls, names: list[str], lower: bool, queries: bool = False, laid_out: NameBytes | None = None
           ) -> NameShapes:
        """`lower`: lower-case the names and cut a `:port` (SNIs and Hosts), as `check` does. A
        name that is not ASCII or holds a line break is not plain (its checks go one by one).
        `queries`: also `exhaustion_cut` and `ignored`, which only DNS query names need (None
        otherwise: a fifth of the work). `laid_out`: the bytes of the names (ASCII, one line
        each, not to be lowered), when the caller has them (the DNS decoder does)."""
        if laid_out is None:
            text = "\n".join(names)
            if not text.isascii() or text.count("\n") != len(names) - 1:
                names = [name if name.isascii() and "\n" not in name else "\x00" for name in names]
                text = "\n".join(names)
            if lower:
                text = text.lower()
                if ":" in text:
                    text = "\n".join(name.split(":", 1)[0] for name in text.split("\n"))
                names = text.split("\n") if names else []
            laid_out = NameBytes.of(text, len(names))
        n = len(names)
        buf, starts, ends, dots, owner = laid_out.buf, laid_out.starts, laid_out.ends, laid_out.dots, laid_out.owner
        raw = buf.tobytes()  # for the rare substrings that take a test per name
        lengths = ends - starts
        sums = np.zeros(len(buf) + 1, np.uint64)  # differences of these are exact per field below 4096
        _CLASS_COUNTS.take(buf).cumsum(out=sums[1:])
        # each name's dots are `dots[edges[i]:edges[i + 1]]` (`owner` ascends); a missing one reads the pad
        edges = owner.searchsorted(np.arange(n + 1))
        lo, hi = edges[:-1], edges[1:]
        count = hi - lo
        padded = np.concatenate((dots, _PAD))
        has_dot = count > 0
        first_dot = np.where(has_dot, padded.take(lo), ends)
        last_dot = padded.take(np.where(has_dot, hi - 1, -1))
        special = np.zeros(n, bool)
        if b".onion." in raw or IP_ADRESS.encode() in raw:
            special[:] = [name.endswith(IP_ADRESS) or ".onion." in name for name in names]
        at_start, at_end = sums.take(starts), sums.take(ends)
        whole = at_end - at_start
        head = sums.take(first_dot) - at_start  # the first label's counts
        after_last = np.where(has_dot, last_dot + 1, starts)
        cut = ignored = None
        if queries:
            second_dot = padded.take(np.where(count > 1, hi - 2, -1))  # the dots before the last one
            third_dot = padded.take(np.where(count > 2, hi - 3, -1))
            keep_three = (third_dot >= 0) & (last_dot - second_dot - 1 <= 3)  # `co.uk`: a short second-level label
            cut = np.where(second_dot >= 0, np.where(keep_three, third_dot, second_dot) + 1 - starts, 0)
            dashed = _counts(head, _DASH, 3) & _counts(head, _NOT_NUMERIC, 3)  # `d-d-d-d`, maybe
            cut = np.where(dashed & (cut > 0), -1, cut)
            ignored = _IGNORED_KEYS.take(_label_keys(buf, after_last, ends))
            if b".intranet." in raw:
                ignored |= np.fromiter((".intranet." in name for name in names), bool, n)
            for i in ignored.nonzero()[0].tolist():  # candidates (a code can collide): the rule settles them
                ignored[i] = is_ignored_query(names[i])
        return cls(
            names=names,
            laid_out=laid_out,
            plain=_counts(whole, _NOT_PLAIN, 0) & (lengths > 0) & (lengths < 1 << _FIELD),
            special=special,
            ip_literal=_counts(whole, _NOT_NUMERIC, 0) & ~_counts(whole, _DIGIT, 0),
            valid=has_dot & (after_last < ends) & _counts(at_end - sums.take(after_last), _UNDERSCORE, 0),
            long_first_label=(first_dot - starts > 24) & _counts(head, _DASH, 0),
            exhaustion_cut=cut,
            ignored=ignored,
        )

    def take(self, picks: np.ndarray) -> NameShapes:
        """The shapes of the names at positions `picks`, in that order."""
        return NameShapes([self.names[i] for i in picks.tolist()], None, self.plain[picks], self.special[picks],
                          self.ip_literal[picks], self.valid[picks], self.long_first_label[picks],
                          None if self.exhaustion_cut is None else self.exhaustion_cut[picks],
                          None if self.ignored is None else self.ignored[picks])
