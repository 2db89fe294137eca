"""Stateful heuristics, owned by the aggregator: scans, infection sweeps, web scans, DNS
exhaustion, NXDOMAIN floods and DGA-like names.

Workers send observations in capture order; one process sees them all, so a scan spread over
several workers is still one scan (Maltrail loses such alerts as workers are added). Timing is
Maltrail's (spec 3, 8): scan windows are tumbling `scan_window`-second windows aligned to the
first sweep, a sweep runs when a packet's second is later than the previous packet's, each key
alerts once per window. Every map keyed by network data has a cap; at the cap new keys are
ignored (scans) or the oldest are evicted (DNS), so a flood of unique keys plateaus memory.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.eventlog import Event
from engine.heuristic_settings import HeuristicSettings
from engine.ipaddr import Addr, addr_text, ip4_private
from workers.batch import PROTO_TCP
from workers.heuristics.dns_rules import dga_reason, looks_like_dnsbl_trail, nx_keys
from workers.queryobs import QueryColumns

HEURISTIC_REF = "(heuristic)"
INFECTION_PORTS = frozenset((135, 139, 445, 1433, 3389, 6379, 6892, 6893, 6901))
_EXHAUSTION_GUARDS = ("wpad", "autodiscover", "_ldap._tcp")


def _is_private(ip: str) -> bool:
    parts = ip.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        a, b = int(parts[0]), int(parts[1])
        return a == 10 or a == 127 or (a == 172 and 16 <= b <= 31) or (a == 192 and b == 168)
    return ip.startswith(("fc", "fd", "fe80:", "::1"))


def _is_private_addr(addr: Addr) -> bool:
    """`_is_private` of an address as workers send it, an IPv4 one without spelling it out."""
    if isinstance(addr, int):
        return ip4_private(addr)
    return _is_private(addr_text(addr))


@dataclass
class _Accumulator:
    """key -> distinct items, with the first observation kept for the report.

    `keys` maps a key to (arrival rank, first probe, its item, or a set once it has several): one
    dictionary entry and no set for the many keys that never see a second item (every connection's
    SYN is a probe); a tuple, not a list: one allocation, and the collector stops tracking it while
    it holds no set. A sweep only needs the keys that grew past their alert limit (`over`), in the
    order the keys arrived: going over every key of the window each second would cost a flood of
    one-port keys more than everything else the aggregator does."""

    max_keys: int
    max_items: int
    limits: dict[str, int]  # alert limit per key tag (key[0]); keys without a tag use `limit`
    limit: int = 0
    keys: dict[tuple, tuple] = field(default_factory=dict)
    over: dict[tuple, None] = field(default_factory=dict)

    def add(self, key: tuple, item: object, probe: tuple) -> None:
        """One item for a key; the first probe of a key is kept for the report."""
        keys = self.keys
        state = keys.get(key)
        if state is None:
            if len(keys) >= self.max_keys:
                return
            keys[key] = (len(keys), probe, item)
            size = 1
        else:
            bucket = state[2]
            if type(bucket) is set:
                if len(bucket) >= self.max_items:
                    return
                bucket.add(item)
                size = len(bucket)
            elif bucket == item or self.max_items < 2:
                return
            else:
                keys[key] = (state[0], state[1], {bucket, item})
                size = 2
        if size > self.limits.get(key[0], self.limit):
            self.over[key] = None

    def size(self, key: tuple) -> int:
        bucket = self.keys[key][2]
        return len(bucket) if type(bucket) is set else 1

    def first(self, key: tuple) -> tuple:
        return self.keys[key][1]

    def due(self, tag: str | None = None) -> list[tuple]:
        """Keys (of a tag) over their limit, in arrival order; they leave `over`."""
        keys = [k for k in self.over if tag is None or k[0] == tag]
        for k in keys:
            del self.over[k]
        keys.sort(key=lambda k: self.keys[k][0])
        return keys

    def clear(self) -> None:
        self.keys.clear()
        self.over.clear()


class Heuristics:
    """Feed observations and second ticks in capture order; get heuristic events back."""

    def __init__(self, settings: HeuristicSettings, is_whitelisted_ip: Callable[[str], bool]) -> None:
        s = self.settings = settings
        self._wl_ip = is_whitelisted_ip
        limits = {"p": s.port_scan_threshold, "i": s.infection_threshold}
        self.tcp = _Accumulator(s.max_keys, s.max_items_per_key, limits)  # port scan and infection share a budget
        self.udp = _Accumulator(s.max_keys, s.max_items_per_key, {"u": s.udp_scan_threshold})
        self.web = _Accumulator(s.max_keys, s.max_items_per_key, {}, s.web_scan_threshold)
        self.alerted: set[tuple] = set()
        self.window_start: int | None = None
        self.last_sec = -1
        self.local_prefix = ""
        self.exhaustion: OrderedDict[str, tuple[int, set[str] | None]] = OrderedDict()  # None: no prefix yet
        self.exhausted: set[str] = set()
        self._dns_cleared = -1
        self.nx: OrderedDict[str, tuple[int, set[str]]] = OrderedDict()
        self._nx_hour = -1

    # ---- ticks and sweeps ----------------------------------------------------------------

    def use_whitelist(self, is_whitelisted_ip: Callable[[str], bool]) -> None:
        """A reloaded index brings its own whitelist; the accumulated state stays."""
        self._wl_ip = is_whitelisted_ip

    def tick(self, sec: int, usec: int) -> list[Event]:
        """The first packet of a later second: evaluate the scan windows."""
        if sec <= self.last_sec:
            return []
        self.last_sec = sec
        events = self._sweep(sec, usec) if self.settings.use_heuristics else []
        if self.window_start is None:
            self.window_start = sec
        elif sec - self.window_start >= self.settings.scan_window:
            self.tcp.clear()
            self.udp.clear()
            self.web.clear()
            self.alerted.clear()
            self.window_start = sec
        if self._dns_cleared < 0:
            self._dns_cleared = sec
        elif sec - self._dns_cleared > 3600:
            self.exhaustion.clear()
            self.exhausted.clear()
            self._dns_cleared = sec
        return events

    def _once(self, key: tuple) -> bool:
        if key in self.alerted:
            return False
        self.alerted.add(key)
        return True

    def _sweep(self, sec: int, usec: int) -> list[Event]:
        s = self.settings
        out: list[Event] = []
        if s.on("port_scanning"):
            out += self._port_scans(self.tcp, "p", "TCP", "potential port scanning", sec, usec)
        if s.on("infection"):
            prefix = self._local_prefix()
            for key in self.tcp.due("i"):
                if self._once(key):
                    src = addr_text(key[1])
                    if prefix and src.startswith(prefix):
                        sport, dst = self.tcp.first(key)
                        out.append((sec, usec, src, sport, addr_text(dst), key[2], "TCP", "PORT", str(key[2]),
                                    "potential infection", HEURISTIC_REF))
        if s.on("udp_scanning"):
            out += self._port_scans(self.udp, "u", "UDP", "potential udp scanning", sec, usec)
        if s.on("web_scanning"):
            for key in self.web.due():
                if self._once(("w", *key)):
                    src, dst = addr_text(key[0]), addr_text(key[1])
                    if not self._wl_ip(src) and not (_is_private(src) and _is_private(dst)):
                        rsec, rusec, sport, dport = self.web.first(key)
                        out.append((rsec, rusec, src, sport, dst, dport, "TCP", "PATH", "*",
                                    "potential web scanning", HEURISTIC_REF))
        return out

    def _port_scans(self, acc: _Accumulator, tag: str, proto: str, info: str, sec: int, usec: int) -> list[Event]:
        """(tag, src, dst) keys with more distinct ports than the threshold, once per window."""
        out: list[Event] = []
        for key in acc.due(tag):
            if self._once(key):
                src, dst = addr_text(key[1]), addr_text(key[2])
                if not self._wl_ip(src):
                    sport, dport = acc.first(key)
                    out.append((sec, usec, src, sport, dst, dport, proto, "IP", src, info, HEURISTIC_REF))
        return out

    def _local_prefix(self) -> str:
        """The most common /16-style prefix among TCP sources (ties: the greatest), cached once known
        (until then, every sweep: sources are spelled out once each, not once per key)."""
        if not self.local_prefix:
            sources = {addr_text(src) for src in {k[1] for k in self.tcp.keys}}
            counts = Counter(".".join(s.split(".")[:2]) + "." for s in sources if "." in s)
            if counts:
                top = max(counts.values())
                self.local_prefix = max(p for p, n in counts.items() if n == top)
        return self.local_prefix

    # ---- observations --------------------------------------------------------------------
    def probes(self, protos: list[int], sources: list[Addr], targets: list[Addr], sports: list[int],
               dports: list[int], syns: list[bool]) -> None:
        """One segment's scan probes in capture order (`workers.observe`): TCP SYN/NULL/FIN/XMAS
        count towards port scans, SYNs to infection ports towards infection sweeps, UDP towards
        UDP scans."""
        if not self.settings.use_heuristics:
            return
        tcp, udp = self.tcp.add, self.udp.add
        for proto, src, dst, sport, dport, syn in zip(protos, sources, targets, sports, dports, syns, strict=True):
            if proto == PROTO_TCP:
                tcp(("p", src, dst), dport, (sport, dport))
                if syn and dport in INFECTION_PORTS:
                    tcp(("i", src, dport), dst, (sport, dst))
            else:
                udp(("u", src, dst), dport, (sport, dport))

    def web_request(self, sec: int, usec: int, src: Addr, sport: int, dst: Addr, dport: int, segment: str) -> None:
        self.web.add((src, dst), segment, (sec, usec, sport, dport))

    def dns_query(self, sec: int, usec: int, src: Addr, sport: int, dst: Addr, dport: int, name: str, domain: str,
                  prefix: str) -> list[Event]:
        """DNS exhaustion bookkeeping (spec 3); the domain then suppresses its queries' trail events.
        Workers send no observation for whitelisted domains (`PayloadInspector._exhaustion`)."""
        if not domain:
            return []
        entry = self.exhaustion.get(domain)
        if entry is None or sec - entry[0] > self.settings.dns_exhaustion_window:
            if entry is not None:
                self.exhausted.discard(domain)
            self.exhaustion[domain] = (sec, None)  # the prefix set comes with a second query: most domains get one
            self.exhaustion.move_to_end(domain)
            if len(self.exhaustion) > self.settings.max_dns_keys:
                self.exhaustion.popitem(last=False)
            return []
        subs = entry[1]
        if subs is None:
            subs = set()
            self.exhaustion[domain] = (entry[0], subs)
        if len(subs) < self.settings.dns_exhaustion_threshold:
            subs.add(prefix)
            return []
        if domain in self.exhausted:
            return []
        self.exhausted.add(domain)
        if not self.settings.on("dns_exhaustion") or any(g in sub for sub in subs for g in _EXHAUSTION_GUARDS):
            return []
        labels = name.split(".")
        trail = f"({'.'.join(labels[:-2])}).{'.'.join(labels[-2:])}"
        if looks_like_dnsbl_trail(trail):
            return []
        return [(sec, usec, addr_text(src), sport, addr_text(dst), dport, "UDP", "DNS", trail,
                 "potential dns exhaustion (suspicious)", HEURISTIC_REF)]

    def dns_queries(self, columns: QueryColumns, start: int, stop: int) -> list[Event]:
        """`dns_query` of the queries `start:stop` of a columnar observation (`workers.queryobs`): a
        query that opens or grows its domain's entry is handled here, without a call each."""
        secs, domains, prefixes = columns.secs, columns.domains, columns.prefixes
        exhaustion, threshold = self.exhaustion, self.settings.dns_exhaustion_threshold
        window, max_keys = self.settings.dns_exhaustion_window, self.settings.max_dns_keys
        out: list[Event] = []
        for i in range(start, stop):
            domain, sec = domains[i], secs[i]
            entry = exhaustion.get(domain)
            if entry is None and domain:
                exhaustion[domain] = (sec, None)
                if len(exhaustion) > max_keys:
                    exhaustion.popitem(last=False)
            elif entry is not None and entry[1] is not None and sec - entry[0] <= window and len(entry[1]) < threshold:
                entry[1].add(prefixes[i])
            else:
                out += self.dns_query(sec, *columns.packet(i), domain, prefixes[i])
        return out

    def suppressed(self, domain: str) -> bool:
        """Queries of an exhausted domain skip their trail checks (spec 3, 8.7)."""
        return domain in self.exhausted

    def nxdomain(self, sec: int, usec: int, src: Addr, sport: int, dst: Addr, dport: int,
                 name: str) -> list[Event]:
        """An NXDOMAIN answer to client `dst`: flood counting and the DGA-label check. The worker
        sends only names that `workers.heuristics.dns_rules.nx_counted` lets through."""
        if not self.settings.use_heuristics:
            return []
        labels = name.split(".")
        if ".".join(labels[-2:]) in self.exhausted:
            return []
        out: list[Event] = []
        if len(labels) == 2:
            reason = dga_reason(labels[0])
            if reason:
                out.append((sec, usec, addr_text(src), sport, addr_text(dst), dport, "UDP", "DNS",
                            f"({labels[0]}).{labels[1]}", reason, HEURISTIC_REF))
        if _is_private_addr(dst):
            return out
        hour = sec // 3600
        if hour != self._nx_hour:
            self.nx.clear()
            self._nx_hour = hour
        for key in nx_keys(name):
            entry = self.nx.get(key)
            if entry is None:
                self.nx[key] = (1, set())
                if len(self.nx) > self.settings.max_dns_keys:
                    self.nx.popitem(last=False)
                continue
            count, names = entry[0] + 1, entry[1]
            names.add(name)
            self.nx[key] = (count, names)
            if count > self.settings.nxdomain_threshold:
                del self.nx[key]
                if key.startswith("*."):
                    domain = key[2:]
                    prefixes = sorted(n[: -len(domain) - 1] for n in names)
                    trail = f"({','.join(prefixes)}).{domain}"
                    for n in names:
                        self.nx.pop(n, None)
                    if any(g in trail for g in _EXHAUSTION_GUARDS):
                        break
                else:
                    trail = key
                out.append((sec, usec, addr_text(src), sport, addr_text(dst), dport, "UDP", "DNS", trail,
                            "excessive no such domain (suspicious)", HEURISTIC_REF))
                break
        return out
