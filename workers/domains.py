"""Domain names against the trails: DNS queries, TLS/QUIC SNI, HTTP Host and proxy targets.

The order and the exclusions are Maltrail's (spec 1.4): IP literals and invalid or whitelisted
names stop early; then the `ip-adress.com` relation, the parent walk on label boundaries (the
longest listed suffix wins, with the ns/mx-on-suspicious and www-on-dynamic exclusions moving
on to shorter parents), the long-domain heuristic, wildcard regex trails and `.onion` gateways.
Clean names go into a bounded negative cache, since DNS traffic repeats itself.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from engine.index.mapped import TrailIndex
from engine.index.schema import F_DYNAMIC, F_SINKHOLE, F_SUSPICIOUS
from workers.heuristics.dns_rules import long_domain_trail
from workers.protocols.dns import is_valid_dns_name
from workers.wildcards import WildcardMatcher

NEGATIVE_CACHE_SIZE = 10_000
PLAIN_NAME = re.compile(r"[a-z0-9._-]+")  # names the bulk paths take: their suffixes hash as ASCII
_INFRA_NAME = re.compile(r"(?:ns|rns|dns|nf|mx|nic)\d*\.")
_IP_ADRESS = ".ip-adress.com"
LONG_DOMAIN_INFO = "long domain (suspicious)"
HEURISTIC_REF = "(heuristic)"


_FIELD = 12  # bits per character class count packed in one uint64: five classes, names below 4096 bytes
_NOT_PLAIN, _NOT_NUMERIC, _DIGIT, _UNDERSCORE, _DASH = (np.uint64(_FIELD * k) for k in range(5))
_FIELD_MASK = np.uint64((1 << _FIELD) - 1)
_CLASS_COUNTS = np.full(256, 1 << _NOT_PLAIN | 1 << _NOT_NUMERIC, np.uint64)  # byte -> its packed counts
_CLASS_COUNTS[np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", np.uint8)] = 1 << _NOT_NUMERIC
_CLASS_COUNTS[np.frombuffer(b"0123456789", np.uint8)] = 1 << _DIGIT
_CLASS_COUNTS[ord(".")] = 0
_CLASS_COUNTS[ord("_")] = 1 << _NOT_NUMERIC | 1 << _UNDERSCORE
_CLASS_COUNTS[ord("-")] = 1 << _NOT_NUMERIC | 1 << _DASH


def _field(counts: np.ndarray, shift: np.uint64) -> np.ndarray:
    return counts >> shift & _FIELD_MASK


@dataclass(frozen=True, slots=True)
class NameShapes:
    """Per-name facts of a list of ASCII names, from one pass of numpy over their bytes.

    plain: only `[a-z0-9._-]`, not empty (the names the bulk walk takes); special: the
    `ip-adress.com` and `.onion` relations apply; ip_literal: digits and dots only;
    valid: `is_valid_dns_name` for plain names; long_first_label: the first label is over 24
    characters without a dash (the long-domain heuristic's precondition)."""

    names: list[str]
    plain: np.ndarray
    special: np.ndarray
    ip_literal: np.ndarray
    valid: np.ndarray
    long_first_label: np.ndarray

    @classmethod
    def of(cls, names: list[str], lower: bool) -> NameShapes | None:
        """None when a name is not ASCII or holds a line break: those are checked one by one."""
        text = "\n".join(names)
        if not text.isascii() or text.count("\n") != len(names) - 1:
            return None
        if lower:
            text = text.lower()
            if ":" in text:
                text = "\n".join(name.split(":", 1)[0] for name in text.split("\n"))
            names = text.split("\n") if names else []
        n = len(names)
        buf = np.frombuffer(text.encode(), np.uint8)
        lengths = np.fromiter(map(len, names), np.int64, n)
        starts = np.cumsum(lengths + 1) - lengths - 1  # the line breaks between names count
        ends = starts + lengths
        sums = np.zeros(len(buf) + 1, np.uint64)  # differences of these are exact per field below 4096
        np.cumsum(_CLASS_COUNTS[buf], out=sums[1:])
        dots = np.flatnonzero(buf == 46)
        owner = np.searchsorted(ends, dots)
        first_dot, last_dot = ends.copy(), np.full(n, -1)
        if dots.size:
            changes = owner[1:] != owner[:-1]
            first, last = np.r_[True, changes], np.r_[changes, True]  # a name's first and last dots
            first_dot[owner[first]] = dots[first]
            last_dot[owner[last]] = dots[last]
        special = np.zeros(n, bool)
        if ".onion." in text or _IP_ADRESS in text:
            special[:] = [name.endswith(_IP_ADRESS) or ".onion." in name for name in names]
        whole = sums[ends] - sums[starts]
        has_dot = last_dot >= 0
        after_last = np.where(has_dot, last_dot + 1, starts)
        return cls(
            names=names,
            plain=(_field(whole, _NOT_PLAIN) == 0) & (lengths > 0) & (lengths < 1 << _FIELD),
            special=special,
            ip_literal=(_field(whole, _NOT_NUMERIC) == 0) & (_field(whole, _DIGIT) > 0),
            valid=has_dot & (after_last < ends) & (_field(sums[ends] - sums[after_last], _UNDERSCORE) == 0),
            long_first_label=(first_dot - starts > 24) & (_field(sums[first_dot] - sums[starts], _DASH) == 0),
        )


@dataclass(frozen=True, slots=True)
class DomainHit:
    trail: str
    info: str
    reference: str


class DomainChecker:
    """`check(name)` -> DomainHit or None; bounded state (the negative cache)."""

    def __init__(self, index: TrailIndex, long_domain: bool = True) -> None:
        self.index = index
        self.long_domain = long_domain
        self._clean: OrderedDict[str, None] = OrderedDict()
        self._wild_entries = [e for _, e in index.wildcards]
        self._wild = WildcardMatcher([p for p, _ in index.wildcards]) if index.wildcards else None

    def _hit(self, trail: str, entry: int) -> DomainHit:
        return DomainHit(trail, self.index.info(entry), self.index.reference(entry))

    def check(self, name: str) -> DomainHit | None:
        name = name.lower().split(":", 1)[0]
        if not name or name.replace(".", "").isdigit() or name in self._clean:
            return None
        if not is_valid_dns_name(name) or self.index.is_whitelisted_domain(name):
            return None
        hit = self._lookup(name)
        if hit is None:
            self._remember_clean(name)
        return hit

    def check_many(self, names: list[str], valid: bool = False,
                   listed_out: list[bool] | None = None) -> list[DomainHit | None]:
        """`check` of each name, the shape tests and the parent walks of the whole list in numpy
        (`NameShapes`, `TrailIndex.suffixes_maybe_listed`): a plain name none of whose suffixes
        may be a trail or whitelisted (nearly every name) only has the long-domain and wildcard
        checks left, the wildcards in one scan; the rest take `check`. `valid`: every name is
        lowercase and passes `is_valid_dns_name` (the caller checked: DNS query names).
        `listed_out` receives, per name, whether one of its suffixes may be a trail or whitelisted
        (False is certain; True where the bulk walk did not run), which also answers for the
        name's parents."""
        out: list[DomainHit | None] = [None] * len(names)
        shapes = NameShapes.of(names, lower=not valid)
        if shapes is None:  # non-ASCII or multi-line names: rare, one at a time
            if listed_out is not None:
                listed_out[:] = [True] * len(names)
            return [self.check(name) for name in names]
        maybe = self.index.suffixes_maybe_listed(shapes.names)
        bulk = shapes.plain & ~shapes.special
        if listed_out is not None:
            listed_out[:] = (maybe | ~bulk).tolist()
        for i in np.flatnonzero(~bulk | maybe).tolist():
            out[i] = self.check(names[i])
        rest = bulk & ~maybe & ~shapes.ip_literal & (True if valid else shapes.valid)
        if self.long_domain:
            for i in np.flatnonzero(rest & shapes.long_first_label).tolist():
                trail = long_domain_trail(shapes.names[i])
                if trail is not None:
                    out[i] = DomainHit(trail, LONG_DOMAIN_INFO, HEURISTIC_REF)
                    rest[i] = False
        if self._wild is not None:
            unlisted = np.flatnonzero(rest).tolist()
            for i, found in zip(unlisted, self._wild.search_many([shapes.names[i] for i in unlisted]), strict=True):
                if found is not None:
                    out[i] = self._wildcard_hit(shapes.names[i], found)
        return out

    def _remember_clean(self, name: str) -> None:
        self._clean[name] = None
        if len(self._clean) > NEGATIVE_CACHE_SIZE:
            self._clean.popitem(last=False)

    def _lookup(self, name: str) -> DomainHit | None:
        ix = self.index
        if name.endswith(_IP_ADRESS):
            prefix = name[: -len(_IP_ADRESS)]
            e = ix.lookup_string(prefix)
            if e >= 0:
                return self._hit(f"{prefix}(.ip-adress.com)", e)
        labels = name.split(".")
        infra = _INFRA_NAME.match(name) is not None
        for k in range(len(labels)):
            key = ".".join(labels[k:])
            e = ix.lookup_string(key)
            if e < 0:
                continue
            flags = int(ix.entry_flags[e])
            if infra and flags & (F_SUSPICIOUS | F_SINKHOLE):
                continue
            if (k == 0 or labels[0] == "www") and flags & F_DYNAMIC:
                continue
            return self._hit(key if k == 0 else f"({'.'.join(labels[:k])}).{key}", e)
        hit = self._unlisted(name)
        if hit is not None:
            return hit
        pos = name.find(".onion.")
        if pos > 0:
            label = name[:pos].rsplit(".", 1)[-1]
            e = ix.lookup_string(label + ".onion")
            if e >= 0:
                end = pos + len(".onion")
                return self._hit(f"{name[:end]}({name[end:]})", e)
        return None

    def _unlisted(self, name: str) -> DomainHit | None:
        """The checks of a name none of whose suffixes is a trail: long domain, then wildcards."""
        if self.long_domain:
            trail = long_domain_trail(name)
            if trail is not None:
                return DomainHit(trail, LONG_DOMAIN_INFO, HEURISTIC_REF)
        found = self._wild.search(name) if self._wild is not None else None
        return self._wildcard_hit(name, found) if found is not None else None

    def _wildcard_hit(self, name: str, found: tuple[int, re.Match[str]]) -> DomainHit:
        which, m = found
        pre, suf = name[: m.start()], name[m.end() :]
        trail = (f"({pre})" if pre else "") + m.group(0) + (f"({suf})" if suf else "")
        return self._hit(trail.replace(".)", ")."), self._wild_entries[which])
