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
        """`check` of each name, with the trail and whitelist walks of all plain names done in bulk
        (`TrailIndex.suffix_hits`): a name none of whose suffixes may be a trail or whitelisted
        (nearly every name) skips both, leaving the long-domain and wildcard checks; the others,
        and names that are not plain, take `check`. `valid`: every name is lowercase and passes
        `is_valid_dns_name` (the caller checked: DNS query names), so it is plain already.
        `listed_out` receives, per name, whether one of its suffixes may be whitelisted (False is
        certain; True where the bulk walk did not run), which also answers for the name's parents."""
        out: list[DomainHit | None] = [None] * len(names)
        plain: list[tuple[int, str]] = []
        for i, raw in enumerate(names):
            name = raw if valid else raw.lower().split(":", 1)[0]
            if name in self._clean:
                continue
            if (not valid and not PLAIN_NAME.fullmatch(name)) or name.endswith(_IP_ADRESS) or ".onion." in name:
                out[i] = self.check(raw)
            else:
                plain.append((i, name))
        trail, listed = self.index.suffix_hits([name for _, name in plain])
        if listed_out is not None:
            listed_out[:] = [True] * len(names)
            for (i, _), maybe in zip(plain, listed, strict=True):
                listed_out[i] = maybe
        unlisted: list[tuple[int, str]] = []
        for (i, name), maybe_trail, maybe_listed in zip(plain, trail, listed, strict=True):
            if maybe_trail or maybe_listed:
                out[i] = self.check(name)
            elif not name.replace(".", "").isdigit() and (valid or is_valid_dns_name(name)):
                long_trail = self.long_domain and long_domain_trail(name)
                if long_trail:
                    out[i] = DomainHit(long_trail, LONG_DOMAIN_INFO, HEURISTIC_REF)
                else:
                    unlisted.append((i, name))
        wild = self._wild.search_many([name for _, name in unlisted]) if self._wild else [None] * len(unlisted)
        for (i, name), found in zip(unlisted, wild, strict=True):
            out[i] = self._wildcard_hit(name, found) if found else None
            if found is None:
                self._remember_clean(name)
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
