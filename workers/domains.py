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
from workers.nameshapes import IP_ADRESS, NameShapes
from workers.protocols.dns import is_valid_dns_name
from workers.wildcards import WildcardMatcher

NEGATIVE_CACHE_SIZE = 10_000
PLAIN_NAME = re.compile(r"[a-z0-9._-]+")  # names the bulk paths take: their suffixes hash as ASCII
_INFRA_NAME = re.compile(r"(?:ns|rns|dns|nf|mx|nic)\d*\.")
LONG_DOMAIN_INFO = "long domain (suspicious)"
HEURISTIC_REF = "(heuristic)"


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

    def check_many(self, names: list[str], valid: bool = False, shapes: NameShapes | None = None,
                   maybe: np.ndarray | None = None) -> list[DomainHit | None]:
        """`check` of each name (`hits_many` as a list)."""
        out: list[DomainHit | None] = [None] * len(names)
        for i, hit in self.hits_many(names, valid, shapes, maybe).items():
            out[i] = hit
        return out

    def hits_many(self, names: list[str], valid: bool = False, shapes: NameShapes | None = None,
                  maybe: np.ndarray | None = None) -> dict[int, DomainHit]:
        """{position: hit} of the names whose `check` reports (few), the shape tests and the parent
        walks of the whole list in numpy (`NameShapes`, `TrailIndex.suffixes_maybe_listed`): a
        plain name none of whose suffixes may be a trail or whitelisted (nearly every name) only
        has the long-domain and wildcard checks left, the wildcards in one scan; the rest take
        `check`. `valid`: every name is lowercase and passes `is_valid_dns_name` (the caller
        checked: DNS query names). `shapes`, `maybe`: the names' `NameShapes` and the
        `suffixes_maybe_listed` of their plain form, when the caller has them already. No names
        cost no numpy call (a batch without ClientHellos still asks)."""
        out: dict[int, DomainHit] = {}
        if not names:
            return out
        shapes = shapes or NameShapes.of(names, lower=not valid)
        if maybe is None:
            maybe = self.index.suffixes_maybe_listed(shapes.names, shapes.laid_out)
        bulk = shapes.plain & ~shapes.special
        for i in (~bulk | maybe).nonzero()[0].tolist():
            hit = self.check(names[i])
            if hit is not None:
                out[i] = hit
        rest = bulk & ~maybe & ~shapes.ip_literal & (True if valid else shapes.valid)
        if self.long_domain:
            for i in (rest & shapes.long_first_label).nonzero()[0].tolist():
                trail = long_domain_trail(shapes.names[i])
                if trail is not None:
                    out[i] = DomainHit(trail, LONG_DOMAIN_INFO, HEURISTIC_REF)
                    rest[i] = False
        if self._wild is not None:  # one scan of every name (no list of those left to build): few hit
            laid_out = shapes.laid_out  # the names' bytes, one line each: their text without a join
            joined = None if laid_out is None else laid_out.buf.tobytes().decode("latin-1")
            for i, found in self._wild.search_many(shapes.names, joined).items():
                if rest[i]:
                    out[i] = self._wildcard_hit(shapes.names[i], found)
        return out

    def _remember_clean(self, name: str) -> None:
        self._clean[name] = None
        if len(self._clean) > NEGATIVE_CACHE_SIZE:
            self._clean.popitem(last=False)

    def _lookup(self, name: str) -> DomainHit | None:
        ix = self.index
        if name.endswith(IP_ADRESS):
            prefix = name[: -len(IP_ADRESS)]
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
