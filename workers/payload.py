"""Payload inspection for the few packets that need it: DNS, HTTP, TLS ClientHello, QUIC Initial.

Selection is numpy over the batch (ports, first payload bytes); only the selected packets reach
the per-packet parsers. Each packet yields events (trail hits and stateless heuristics) and
observations for the stateful heuristics (DNS exhaustion, NXDOMAIN floods, web scans), which the
aggregator owns so that results do not depend on how packets were spread over workers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import compress
from operator import itemgetter
from urllib.parse import unquote

import numpy as np

from engine.eventlog import Event
from engine.index.mapped import TrailIndex
from engine.index.namefilter import NameBytes
from engine.index.schema import F_ATTACKER, F_MALWARE, F_PARKING, F_SINKHOLE, UA_PREFIX
from engine.ipaddr import Addr, addr_text, ip4_private, parse_ip4
from workers import dnsbatch, httpbatch, queryobs, tlsbatch
from workers.batch import PROTO_TCP, PROTO_UDP, Gather, Parsed, WordSet, among, row_addresses
from workers.domains import HEURISTIC_REF, PLAIN_NAME, DomainChecker
from workers.fifo import FifoCache, GenerationCache
from workers.heuristics import http_rules
from workers.heuristics.dns_rules import exhaustion_domain, nx_counted, nx_shape_counted
from workers.nameshapes import NameShapes
from workers.protocols import quic
from workers.protocols.dns import DnsMessage, is_ignored_query, is_valid_dns_name, parse_dns, tcp_messages
from workers.protocols.http import (
    HttpRequest,
    RequestFields,
    forwarded_for,
    parse_http_request,
    parse_http_response,
    request_fields,
    split_requests,
)
from workers.protocols.quic import QUIC_V1, QUIC_V2, crypto_stream, hello_complete, initial_crypto
from workers.protocols.tls import client_hello_sni, handshake_sni, server_certificate_sha1
from workers.settings import DetectionSettings

# Observation kinds sent to the aggregator: (kind, sec, usec, src, sport, dst, dport, detail...)
OBS_DNS_QUERY = "dnsq"  # detail: query name, exhaustion domain, prefix
OBS_DNS_QUERIES = "dnsqs"  # a batch's OBS_DNS_QUERY in columns, not (sec, ...): `workers.queryobs`
OBS_NXDOMAIN = "nx"  # detail: query name
OBS_WEB = "web"  # detail: first path segment
OBS_QUIC = "quic"  # detail: client SCID, CRYPTO chunks ((offset, bytes), ...) of a ClientHello cut over datagrams
QUERY_CACHE_SIZE = 20_000
REQUEST_CACHE_SIZE = 4096  # request plans kept per worker (FIFO)
QUIC_REPLY_CACHE_SIZE = 4096  # (server, client, client SCID) of the QUIC clients whose Initial a worker read
PLAN_KEY_CHARS = 1024  # longer requests (path, body, Host, User-Agent) are checked every time, never kept
BULK_HELLOS = 80  # ClientHellos in a batch from which `tlsbatch` reads their SNIs together (measured: fewer
# cost less one at a time)
# A query name's facts as one int (a small int is a shared object: nothing to build, keep or free per
# name): where its exhaustion domain starts (0: it counts against none; else after a dot) and two flags
FACT_CUT = (1 << 40) - 1  # any name's length (the decoder's are at most 255)
FACT_TRAIL = 1 << 40  # the name reports (its events follow the query's observation)
FACT_IGNORED = 1 << 41  # never checked, counts against no domain

_REQUEST_STARTS = np.sort(np.array([int.from_bytes(m, "big") for m in (
    b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"CONN", b"PATC", b"TRAC", b"PROP")], dtype=np.uint32))
# First bytes of a payload, read in one gather: a request or status line's first word, a TLS
# record's type and handshake type, a QUIC long header's version
_PAYLOAD_HEAD = np.dtype({"names": ["b0", "first4", "version", "kind"], "formats": ["u1", ">u4", ">u4", "u1"],
                          "offsets": [0, 0, 1, 5], "itemsize": 6})
_PAYLOAD_TYPES = (np.uint8, np.uint32, np.uint32, np.uint8)
_HTTP_STARTS = WordSet((*_REQUEST_STARTS.tolist(), int.from_bytes(b"HTTP", "big")))
_IP4ISH = re.compile(r"\d+\.[0-9.]+")
_PRIVATE = re.compile(r"(?:10\.|172\.(?:1[6-9]|2\d|3[01])\.|192\.168\.|127\.|169\.254\.|fc|fd|fe80:|::1$)")
_RCE = http_rules.SUSPICIOUS_CATEGORIES  # the category list; the RCE one is looked up by name below


def is_private(ip: str) -> bool:
    return _PRIVATE.match(ip) is not None


def _private_addr(addr: Addr) -> bool:
    """`is_private` of an address as it came, without spelling an IPv4 one out."""
    if isinstance(addr, int):
        return ip4_private(addr, link_local=True)
    return is_private(addr_text(addr))


Item = tuple[int, str, tuple]  # (row, "event" | observation kind, payload)


def payload_rows(p: Parsed, certificates: bool = True) -> np.ndarray:
    """Rows that need a payload parser: DNS (UDP, and TCP with room for a length and a header),
    HTTP-looking or TLS handshake TCP, QUIC v1/v2 Initials.
    Server handshakes (for certificate hashes) only when the trails hold certificates."""
    size = p.payload_len
    tcp, udp = p.proto == PROTO_TCP, p.proto == PROTO_UDP
    some = p.first_frag & (size > 0) & ~p.malformed & (tcp | udp)
    # over every row (a mask costs less than picking the rows with a payload first)
    b0, first4, version, kind = p.heads.fields(p.payload_off, _PAYLOAD_HEAD, _PAYLOAD_TYPES, needed=some)
    port53 = (p.sport == 53) | (p.dport == 53)
    dns = udp & port53
    dns_tcp = tcp & port53 & (size >= 14)
    http = tcp & (size >= 4) & _HTTP_STARTS.has(first4)
    # ClientHello, ServerHello (its flight: the certificate)
    tls = tcp & (b0 == 0x16) & (size >= 6) & ((kind == 1) | ((kind == 2) & certificates))
    initial = (((b0 & 0xF0) == 0xC0) & (version == QUIC_V1)) | (((b0 & 0xF0) == 0xD0) & (version == QUIC_V2))
    quic = udp & ~dns & initial & (size >= 64)
    return (some & (dns | dns_tcp | http | tls | quic)).nonzero()[0]


def _hello_rows(p: Parsed, data: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Which of the inspected rows are TCP segments that start like a ClientHello record, away
    from port 53 (where DNS over TCP is tried first)."""
    off = p.payload_off[rows]
    tcp = (p.proto[rows] == PROTO_TCP) & (p.sport[rows] != 53) & (p.dport[rows] != 53)
    return tcp & (data.take(off, mode="clip") == 0x16) & (data.take(off + 5, mode="clip") == 1)


def _request_rows(p: Parsed, data: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Which of the inspected rows are TCP segments that start like an HTTP request, away from
    port 53 (where DNS over TCP is tried first): the batch's requests, checked together."""
    tcp = (p.proto[rows] == PROTO_TCP) & (p.sport[rows] != 53) & (p.dport[rows] != 53)
    return tcp & among(Gather(data).be32(p.payload_off[rows]), _REQUEST_STARTS)


Cols = tuple[int, int, int, Addr, int, Addr, int, int, int, int]  # row, sec, usec, src, sport, dst, dport, entries
Lone = tuple[Cols, RequestFields]  # a segment's lone request (`PayloadInspector._parsed_segment`)


class PayloadInspector:
    """Per-packet protocol checks. Its state is bounded caches of what repeats: parsed DNS
    messages, query-name facts, NXDOMAIN name checks, HTTP request plans and the domain checker's
    clean names; none changes what is reported."""

    def __init__(self, index: TrailIndex, settings: DetectionSettings) -> None:
        self.index = index
        self.settings = settings
        self.domains = DomainChecker(index, long_domain=settings.use_heuristics and settings.long_domain)
        self._queries: FifoCache[bytes, DnsMessage | None] = FifoCache(QUERY_CACHE_SIZE)
        self._names: GenerationCache[str, int] = GenerationCache(QUERY_CACHE_SIZE)  # `FACT_*`
        self._nx_names: GenerationCache[str, bool] = GenerationCache(QUERY_CACHE_SIZE)
        self._requests: FifoCache[tuple, _Plan | object] = FifoCache(REQUEST_CACHE_SIZE)
        self._once: FifoCache[int, bool] = FifoCache(4 * REQUEST_CACHE_SIZE)  # hashes of requests seen once
        self._settled: GenerationCache[tuple, tuple[str, ...]] = GenerationCache(4 * REQUEST_CACHE_SIZE)  # `()`: check
        self._quic_replies: FifoCache[tuple, None] = FifoCache(QUIC_REPLY_CACHE_SIZE)  # `_quic_rows`
        self.certificates = bool(index.meta["counts"].get("certificates", 1))

    def warm(self) -> None:
        """Pay the first-use costs now (the cipher imports of the first QUIC Initial, the
        whitelist's name set of the first domain check: about 10 ms), as a worker does before it
        reports ready, so the first packets of a link meet a worker at full speed."""
        quic.warm()
        self.index.whitelist_names()

    def rows(self, p: Parsed) -> np.ndarray:
        return payload_rows(p, self.certificates)

    def inspect(self, p: Parsed, data: np.ndarray, rows: np.ndarray) -> list[Item]:
        out: list[Item] = []
        if not rows.size:
            return out
        dns = (p.proto[rows] == PROTO_UDP) & ((p.sport[rows] == 53) | (p.dport[rows] == 53))
        if dns.any():
            rows = np.sort(np.concatenate((rows[~dns], self._dns_batch(p, data, rows[dns], out))))
        if not rows.size:
            return out
        requests: list[Lone] = []  # lone requests, checked together after the loop
        asked = _request_rows(p, data, rows)
        if asked.any():
            self._request_segments(p, data, rows[asked], requests, out)
            rows = rows[~asked]
        names: list[tuple[_Packet | Cols | int, str]] = []  # SNIs, likewise
        if rows.size:
            hellos = _hello_rows(p, data, rows)
            if hellos.any():
                self._hellos(p, data, rows[hellos], names)
                rows = rows[~hellos]
        observed = False  # QUIC observations made before the rows below: out is sorted at the end
        quic = (p.proto[rows] == PROTO_UDP) & (p.sport[rows] != 53) & (p.dport[rows] != 53)  # QUIC Initials
        if quic.any():
            observed = self._quic_rows(p, data, rows[quic], names, out)
            rows = rows[~quic]
        columns = self._columns(p, rows) if rows.size else ()
        view = memoryview(data)  # its slices make bytes faster than the array's
        for row, off, n, s, d, sec, usec, sport, dport, proto, de, se, dpe in columns:
            payload = view[off : off + n].tobytes()
            ctx = _Packet(row, sec, usec, s, sport, d, dport, "TCP" if proto == PROTO_TCP else "UDP", out, de, se, dpe)
            if proto == PROTO_UDP:
                self._dns(ctx, payload)
            elif (sport == 53 or dport == 53) and self._dns_tcp(ctx, payload):
                continue
            elif payload[:1] == b"\x16":
                if payload[5:6] == b"\x01":
                    sni = client_hello_sni(payload)
                    if sni:
                        names.append((ctx, sni))
                else:
                    self._certificate(ctx, server_certificate_sha1(payload))
            else:
                self._http(ctx, payload, requests, (row, sec, usec, s, sport, d, dport, de, se, dpe))
        self._names_in_bulk(p, names, out)
        if requests:
            self._requests_in_bulk(requests, out)
        if requests or asked.any() or observed:  # items made out of row order: a row's stay together, in order
            out.sort(key=itemgetter(0))
        return out

    def _columns(self, p: Parsed, rows: np.ndarray) -> Iterator[tuple]:
        """Per row: row, payload offset and length, source, destination, time, ports, protocol, and
        the trail entries of destination, source and destination:port."""
        dst_e, src_e, dstport_e = self._address_entries(p, rows)
        src, dst = row_addresses(p, rows)
        return zip(rows.tolist(), p.payload_off[rows].tolist(), p.payload_len[rows].tolist(), src, dst,
                   p.sec[rows].tolist(), p.usec[rows].tolist(), p.sport[rows].tolist(), p.dport[rows].tolist(),
                   p.proto[rows].tolist(), dst_e.tolist(), src_e.tolist(), dstport_e.tolist(), strict=True)

    def _request_segments(self, p: Parsed, data: np.ndarray, rows: np.ndarray, requests: list[Lone],
                          out: list[Item]) -> None:
        """Segments that start like a request: parsed here, their lone requests (the usual case)
        joining `requests`, without a packet context (most need none). Their columns are zipped
        in `Cols` order, which spares rebuilding a tuple per request."""
        view = memoryview(data)  # its slices make bytes faster than the array's
        payloads = [view[off : off + n].tobytes() for off, n in zip(p.payload_off[rows].tolist(),
                                                                    p.payload_len[rows].tolist(), strict=True)]
        dst_e, src_e, dstport_e = self._address_entries(p, rows)
        src, dst = row_addresses(p, rows)
        columns = zip(rows.tolist(), p.sec[rows].tolist(), p.usec[rows].tolist(), src, p.sport[rows].tolist(), dst,
                      p.dport[rows].tolist(), dst_e.tolist(), src_e.tolist(), dstport_e.tolist(), strict=True)
        for cols, payload, fields in zip(columns, payloads, map(request_fields, payloads), strict=True):
            if fields is None:
                continue
            if fields[1]:  # a body: maybe pipelined requests
                self._parsed_segment(payload, fields, cols, requests, out)
            else:
                requests.append((cols, fields))

    def _parsed_segment(self, payload: bytes, fields: RequestFields, cols: Cols, requests: list[Lone],
                        out: list[Item], c: _Packet | None = None) -> None:
        """A segment whose first request has these fields: a lone one (no body, nothing
        pipelined: the usual case) joins `requests`; several are checked in order on the packet
        (`c`, else made from `cols`)."""
        if not fields[1] or len(split_requests(payload)) < 2:
            requests.append((cols, fields))
        else:
            self._pipelined(c or _packet(cols, out), payload)

    def _address_entries(self, p: Parsed, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Trail entries of every selected packet's destination, source and destination:port, in
        one batch lookup each: a single-address numpy lookup costs as much as a thousand batched.
        IPv4 sides are looked up only when the /24 prefilter lets one through (for DNS queries to a
        resolver, almost never), IPv6 destinations and sources together: each numpy call costs as
        much as a few hundred addresses."""
        v4 = p.version.take(rows) == 4
        if v4.all():
            dst, src, dport = self._entries4(p, rows)
            return dst, src, dport
        out = np.full((3, rows.size), -1, np.int32)
        if v4.any():
            out[:, v4] = self._entries4(p, rows[v4])
        v6 = ~v4
        r6 = rows[v6]
        pos = p.v6_rows.searchsorted(r6)
        dst6 = p.dst6.take(pos)
        both = self.index.lookup_ip6(np.concatenate((dst6, p.src6.take(pos))))
        out[0, v6], out[1, v6] = both[: r6.size], both[r6.size :]
        out[2, v6] = self.index.lookup_ip6port(dst6, p.dport.take(r6).astype(np.uint16))
        return out[0], out[1], out[2]

    def _entries4(self, p: Parsed, rows: np.ndarray) -> np.ndarray:
        """`_address_entries` of IPv4 rows, as rows of one (3, n) array."""
        ix = self.index
        dst, src = p.dst4.take(rows), p.src4.take(rows)
        out = np.full((3, rows.size), -1, np.int32)
        if ix.ip4_candidates(np.concatenate((dst, src))).size:  # else no side is a trail, nor dst:port
            out[0], out[1] = ix.lookup_ip4(dst), ix.lookup_ip4(src)
            out[2] = ix.lookup_ip4port(dst, p.dport.take(rows).astype(np.uint32))
        return out

    # ---- helpers --------------------------------------------------------------------------
    def _entry_event(self, c: _Packet | _Plan, etype: str, trail: str, entry: int, obs: tuple = ()) -> None:
        c.event(etype, trail, self.index.info(entry), self.index.reference(entry), obs)

    def _domain(self, c: _Packet | _Plan, name: str, obs: tuple = ()) -> None:
        hit = self.domains.check(name)
        if hit is not None:
            c.event("DNS", hit.trail, hit.info, hit.reference, obs)

    def _certificate(self, c: _Packet, sha1: str | None) -> None:
        """A server certificate whose SHA-1 is a trail (Maltrail's Rust sensor: type CERT)."""
        if sha1:
            e = self.index.lookup_string(sha1)
            if e >= 0:
                self._entry_event(c, "CERT", sha1, e)

    def _hellos(self, p: Parsed, data: np.ndarray, rows: np.ndarray, names: list[tuple[_Packet | Cols | int, str]]
                ) -> None:
        """The SNIs of the ClientHellos at `rows`, read together (`tlsbatch`) when there are enough
        of them to pay its fixed cost, else one at a time; each given by its row: the few whose SNI
        reports get a packet context in `_names_in_bulk`."""
        off, length = p.payload_off[rows], p.payload_len[rows]
        if rows.size >= BULK_HELLOS:
            found = tlsbatch.snis(data, off, length)
            names += zip(rows[found.named].tolist(), found.names, strict=True)
            rows, off, length = rows[found.slow], off[found.slow], length[found.slow]
        view = memoryview(data)  # its slices make bytes faster than the array's
        for row, start, n in zip(rows.tolist(), off.tolist(), length.tolist(), strict=True):
            sni = client_hello_sni(view[start : start + n])
            if sni:
                names.append((row, sni))

    def _names_in_bulk(self, p: Parsed, names: list[tuple[_Packet | Cols | int, str]], out: list[Item]) -> None:
        """The SNIs of a batch's TLS and QUIC ClientHellos, checked in one `check_many`; a packet
        given by its columns or its row gets its context only when its SNI reports."""
        hits = [(c, hit) for (c, _), hit in zip(names, self.domains.check_many([name for _, name in names]),
                                                strict=True) if hit is not None]
        contexts = iter(self._contexts(p, [c for c, _ in hits if isinstance(c, int)], out))
        for c, hit in hits:
            packet = next(contexts) if isinstance(c, int) else _packet(c, out) if isinstance(c, tuple) else c
            packet.event("DNS", hit.trail, hit.info, hit.reference)

    def _contexts(self, p: Parsed, rows: list[int], out: list[Item]) -> list[_Packet]:
        """The packet contexts of the few rows of a bulk path that report or observe something, their
        trail entries looked up together."""
        if not rows:
            return []
        entries = (e.tolist() for e in self._address_entries(p, np.array(rows, np.int64)))
        return [_context(p, row, out, *row_entries) for row, *row_entries in zip(rows, *entries, strict=True)]

    def _quic_rows(self, p: Parsed, data: np.ndarray, rows: np.ndarray, names: list[tuple[_Packet | Cols | int, str]],
                   out: list[Item]) -> bool:
        """The UDP rows that are not DNS, as QUIC Initials. A datagram whose own Initials give the SNI
        is checked by its row (`_names_in_bulk` makes the context of the few that report); the CRYPTO
        chunks of one that holds only part of a ClientHello go to the aggregator, which sees every
        datagram of the connection in capture order whatever worker handled them. No trail entries
        are looked up for the rows (0.75 µs a row): only those observed get a context, made after the
        loop. True when observations were added to `out`.

        The server's Initial back to a client whose Initial this worker read is skipped (its DCID is
        the client's SCID): the server protects it with its own keys, so the client keys derived
        from its DCID only fail to decrypt it, after a key derivation and two cipher contexts that
        are half the QUIC work of a link."""
        view = memoryview(data)  # its slices make bytes faster than the array's
        replies = self._quic_replies
        partial: list[tuple[int, tuple[bytes, tuple[tuple[int, bytes], ...]]]] = []
        src, dst = row_addresses(p, rows)
        for row, off, n, s, sport, d, dport in zip(rows.tolist(), p.payload_off[rows].tolist(),
                                                   p.payload_len[rows].tolist(), src, p.sport[rows].tolist(), dst,
                                                   p.dport[rows].tolist(), strict=True):
            payload = view[off : off + n].tobytes()
            if (s, sport, d, dport, payload[6 : 6 + payload[5]]) in replies:
                continue
            scid, chunks = initial_crypto(payload)
            if not chunks:
                continue
            replies.put((d, dport, s, sport, scid), None)
            stream = crypto_stream(chunks)
            sni = handshake_sni(stream) if stream else None
            if sni:
                names.append((row, sni))
            elif stream[:1] in (b"", b"\x01") and not hello_complete(stream):  # a ClientHello's start, or later
                partial.append((row, (scid, tuple(chunks))))
        for packet, (_, detail) in zip(self._contexts(p, [row for row, _ in partial], out), partial, strict=True):
            packet.observe(OBS_QUIC, detail)
        return bool(partial)

    def sni_events(self, sec: int, usec: int, src: Addr, sport: int, dst: Addr, dport: int, sni: str) -> list[Event]:
        """The events of an SNI read by the aggregator (a reassembled QUIC ClientHello), made by the
        same code as a packet's own."""
        out: list[Item] = []
        self._domain(_Packet(-1, sec, usec, src, sport, dst, dport, "UDP", out, -1, -1, -1), sni)
        return [data[0] for _, _, data in out]

    # ---- DNS (spec 2.7) ---------------------------------------------------------------------
    def _dns(self, c: _Packet, payload: bytes) -> None:
        msg = self._parse_dns(payload)
        if msg is None:  # not DNS after all: its addresses are still checked (Maltrail misses these)
            self._plain_udp(c)
        else:
            self._dns_message(c, msg)

    def _dns_tcp(self, c: _Packet, segment: bytes) -> bool:
        """DNS over TCP (Maltrail parses none): each complete message of the segment is checked as a
        UDP one would be. False when none parses, so the segment is inspected like other TCP."""
        found = False
        for message in tcp_messages(segment):
            msg = self._parse_dns(message)
            if msg is not None:
                self._dns_message(c, msg)
                found = True
        return found

    def _dns_message(self, c: _Packet, msg: DnsMessage) -> None:
        """Spec 2.7, except that AAAA queries are checked too (docs/DIFFERENCES.md): an A and an
        AAAA query from one socket in one second give identical events, which the throttle merges."""
        q = msg.qname
        if msg.byte2 & 0xFA == 0:  # standard query
            if not q or not is_valid_dns_name(q) or is_ignored_query(q):
                return
            exh = self._exhaustion(q)
            tag = (exh[0],) if exh else ()
            if exh:
                c.observe(OBS_DNS_QUERY, (q, exh[0], exh[1]))
            if msg.qtype == 12 or msg.qclass != 1:
                return
            self._query_events(c, q, tag)
        elif self.settings.use_heuristics and msg.byte2 & 0x80:
            if not q or not is_valid_dns_name(q):
                return
            if msg.byte3 == 0x80 and msg.answers_a:
                first = parse_ip4(msg.answers_a[0])
                if first is None or not self.index.may_hold_ip4(first):
                    return
                e = self.index.lookup_ip_text(msg.answers_a[0])
                if e < 0 or self.index.is_whitelisted_domain(q):
                    return
                flags = int(self.index.entry_flags[e])
                head, _, tld = q.rpartition(".")
                trail = f"({head}).{tld}" if head else q
                if flags & F_SINKHOLE:
                    words = self.index.info(e).split()
                    who = words[1] if len(words) > 1 else "unknown"
                    c.event("DNS", trail, f"sinkholed by {who} (malware)", HEURISTIC_REF)
                elif flags & F_PARKING:
                    c.event("DNS", trail, "parked site (suspicious)", HEURISTIC_REF)
            elif msg.byte3 == 0x83 and self._nx_counted(q):
                c.observe(OBS_NXDOMAIN, (q,))

    def _query_events(self, c: _Packet, q: str, tag: tuple) -> None:
        """A standard query's trail events: its addresses (the name in the trail), then the name."""
        if c.dstport_entry >= 0:
            self._entry_event(c, "IPORT", f"{c.dst} ({q})", c.dstport_entry, tag)
        elif c.dst_entry >= 0:
            self._entry_event(c, "IP", f"{c.dst} ({q})", c.dst_entry, tag)
        elif c.src_entry >= 0:
            self._entry_event(c, "IP", c.src, c.src_entry, tag)
        self._domain(c, q, tag)

    def _dns_batch(self, p: Parsed, data: np.ndarray, rows: np.ndarray, out: list[Item]) -> np.ndarray:
        """DNS rows decoded together (`workers.dnsbatch`); returns the rows for the per-message path:
        those not plain enough to decode in bulk, and responses whose first A answer is a trail."""
        b = dnsbatch.decode(data, p.payload_off[rows], p.payload_len[rows], self.settings.use_heuristics)
        fast = rows[b.fast]
        named = _NamedChecks(self.index, b)
        if b.queries.size:
            q = b.queries
            self._dns_queries(p, fast.take(q), b, out, named)
        slow = rows[b.slow]
        if not self.settings.use_heuristics:
            return slow
        if b.nx.size:
            r = fast.take(b.nx)
            src, dst = row_addresses(p, r)
            names = b.nx_names
            counts, new = self._nx_names.lookup(names)  # before new names evict any
            counts.update(self._nx_counted_many(new, named.nx_maybe() if new is names else None))
            for row, name, sec, usec, s, sport, d, dport in zip(
                    r.tolist(), names, p.sec[r].tolist(), p.usec[r].tolist(), src,
                    p.sport[r].tolist(), dst, p.dport[r].tolist(), strict=True):
                if counts[name]:
                    out.append((row, OBS_NXDOMAIN, (sec, usec, s, sport, d, dport, name)))
        answered = b.has_a.nonzero()[0]  # answers only
        if answered.size:
            listed = answered[self.index.lookup_ip4(b.answer_a[answered]) >= 0]
            slow = np.concatenate((slow, fast[listed]))
        return slow

    def _dns_queries(self, p: Parsed, rows: np.ndarray, b: dnsbatch.DnsBatch, out: list[Item],
                     named: _NamedChecks | None = None) -> None:
        """Standard queries: exhaustion observations, then trail checks; a packet context (address
        texts) is only built for the rare query that reports something: one whose addresses are
        trails (numpy masks say which) or whose name is one (a set of the few names says which).
        `b`: the decoded batch (`rows` are its queries' rows); `named`: the decoder's bytes of the
        names and their filter answers, for a batch of names all new. Query types and classes are
        read only when something may report."""
        names = b.query_names
        dst_e, src_e, dstport_e = self._address_entries(p, rows)
        facts_of, new = self._names.lookup(names)  # before new names evict any
        laid_out = None
        if new is names:  # all new (the usual batch on a real link)
            laid_out, maybe = named.queries() if named else (None, None)
            fact, trails = self._names_facts(names, laid_out, maybe)
        else:
            trails = [q for q, f in facts_of.items() if f & FACT_TRAIL]  # the names that report
            if new:
                fresh, new_trails = self._names_facts(new)
                facts_of.update(zip(new, fresh.tolist(), strict=True))
                trails += new_trails
            fact = np.fromiter(map(facts_of.__getitem__, names), np.int64, len(names))
        self._query_observations(p, rows, names, fact, out, laid_out)
        listed = (dst_e & src_e & dstport_e) >= 0  # entries are -1 or not negative: all three -1 AND to -1
        if not trails and not listed.any():
            return
        qtype, qclass = b.types(b.queries)
        checked = (qtype != 12) & (qclass == 1)
        report = (checked & listed).nonzero()[0].tolist()
        if trails:
            named = set(trails)
            report = sorted({*report, *(i for i, q in enumerate(names) if q in named and checked[i])})
        for i in report:  # a query's events follow its observation
            f = int(fact[i])
            if not f & FACT_IGNORED:
                q, cut = names[i], f & FACT_CUT
                c = _context(p, int(rows[i]), out, int(dst_e[i]), int(src_e[i]), int(dstport_e[i]))
                self._query_events(c, q, (q[cut:],) if cut else ())

    @staticmethod
    def _query_observations(p: Parsed, rows: np.ndarray, names: list[str], fact: np.ndarray, out: list[Item],
                            laid_out: NameBytes | None = None) -> None:
        """The exhaustion observations of the queries that count against a domain (`fact`: their
        facts in order), as one columnar item (`OBS_DNS_QUERIES`, `workers.queryobs`) at the first
        one's row; the aggregator applies each query in its place among the batch's other items.
        `laid_out`: the names' bytes, when the decoder has them (used when every query counts)."""
        cuts = fact & FACT_CUT
        counted = cuts.nonzero()[0]
        if counted.size < len(names):
            if not counted.size:
                return
            names = list(compress(names, cuts.tolist()))
            rows, cuts, laid_out = rows.take(counted), cuts.take(counted), None
        out.append((int(rows[0]), OBS_DNS_QUERIES, queryobs.pack(p, rows, names, cuts, laid_out)))

    def _exhaustion(self, q: str) -> tuple[str, str] | None:
        """The (domain, prefix) a query counts against for DNS exhaustion; None for whitelisted
        domains, which the aggregator would ignore anyway (spared an observation each)."""
        exh = exhaustion_domain(q)
        return None if exh is None or self.index.is_whitelisted_domain(exh[0]) else exh

    def _nx_counted(self, name: str) -> bool:
        """`dns_rules.nx_counted` for a valid name, cached (bounded): NXDOMAIN names repeat."""
        ix = self.index
        counted = bool(name) and is_valid_dns_name(name) and nx_counted(
            name, ix.is_whitelisted_domain, lambda key: ix.lookup_string(key) >= 0)
        return self._nx_names.put(name, counted)

    def _nx_counted_many(self, names: list[str], maybe: np.ndarray | None = None) -> dict[str, bool]:
        """`_nx_counted` of new names, their suffix walks in bulk: a plain name none of whose
        suffixes may be a trail or whitelisted needs only the name's own tests. `maybe`: the
        names' `suffixes_maybe_listed`, when the caller has it (right for the plain ones)."""
        out = {q: self._nx_counted(q) for q in names if not PLAIN_NAME.fullmatch(q)}
        if maybe is None:
            plain = [q for q in names if q not in out]
            maybe = self.index.suffixes_maybe_listed(plain)
        else:
            plain = names if not out else [q for q in names if q not in out]
            if out:
                maybe = maybe[[q not in out for q in names]]
        for q, listed in zip(plain, maybe.tolist(), strict=True):
            if listed:
                out[q] = self._nx_counted(q)
            else:
                out[q] = self._nx_names.put(q, is_valid_dns_name(q) and nx_shape_counted(q))
        return out

    def _names_facts(self, names: list[str], laid_out: NameBytes | None = None, maybe: np.ndarray | None = None
                     ) -> tuple[np.ndarray, list[str]]:
        """What each new query name (lowercase, as the batch decoder gives them; a repeat is checked
        again) alone decides (ignored or not, exhaustion domain, whether it is a trail: `FACT_*`),
        the trail checks in bulk; kept in a bounded cache: names repeat far more than packets do.
        Returns the facts in the names' order (even when the cache is smaller than the batch) and
        the names that are trails. `laid_out`, `maybe`: the names' bytes and `suffixes_maybe_listed`, when the
        decoder has them."""
        shapes = NameShapes.of(names, lower=False, queries=True, laid_out=laid_out)
        if maybe is None:
            maybe = self.index.suffixes_maybe_listed(shapes.names, shapes.laid_out)
        keep = shapes.plain & shapes.valid & ~shapes.ignored
        for i in (~shapes.plain).nonzero()[0].tolist():  # rare: the shapes do not say (too long, not ASCII)
            keep[i] = is_valid_dns_name(names[i]) and not is_ignored_query(names[i])
        picks = keep.nonzero()[0]
        if picks.size < len(names):
            queries = [names[i] for i in picks.tolist()]
            hits = self.domains.hits_many(queries, valid=True, shapes=shapes.take(picks), maybe=maybe[picks])
        else:
            queries = names
            hits = self.domains.hits_many(queries, valid=True, shapes=shapes, maybe=maybe)
        fact = np.where(shapes.plain, shapes.exhaustion_cut, -1)  # -1: ask the rule
        for i in (keep & (fact < 0)).nonzero()[0].tolist():
            exh = exhaustion_domain(names[i])
            fact[i] = len(exh[1]) + 1 if exh else 0
        for i in ((maybe | ~shapes.plain | shapes.special) & keep & (fact > 0)).nonzero()[0].tolist():
            if self.index.is_whitelisted_domain(names[i][fact[i]:]):  # few: a suffix may be whitelisted
                fact[i] = 0
        if picks.size < len(names):
            fact[~keep] = FACT_IGNORED
        trails = [queries[i] for i in hits]
        if hits:
            fact[picks[list(hits)]] |= FACT_TRAIL
        self._names.put_many(zip(names, fact.tolist(), strict=True))
        return fact, trails

    def _parse_dns(self, payload: bytes) -> DnsMessage | None:
        """DNS repeats itself: a message is parsed once per distinct content (transaction id aside)."""
        if 12 < len(payload) <= 512:
            key = payload[2:]
            msg = self._queries.get(key)
            if msg is None:
                msg = self._queries.put(key, parse_dns(payload))
            return msg
        return parse_dns(payload)  # large messages: rare, not worth a cache slot

    def _plain_udp(self, c: _Packet) -> None:
        """The non-DNS UDP rule: destination (not for attackers), else source (not for malware)."""
        ix = self.index
        if c.dst_entry >= 0:
            if not int(ix.entry_flags[c.dst_entry]) & F_ATTACKER:
                self._entry_event(c, "IP", c.dst, c.dst_entry)
        elif c.src_entry >= 0 and not int(ix.entry_flags[c.src_entry]) & F_MALWARE:
            self._entry_event(c, "IP", c.src, c.src_entry)

    # ---- HTTP (spec 2.6) --------------------------------------------------------------------
    def _http(self, c: _Packet, payload: bytes, requests: list[Lone], cols: Cols) -> None:
        """A response, or the requests of a segment; a lone request (the usual case) joins `requests`,
        which are checked together after the batch's loop."""
        if payload.startswith(b"HTTP/"):
            self._http_response(c, payload)
        else:
            fields = request_fields(payload)
            if fields is not None:
                self._parsed_segment(payload, fields, cols, requests, c.out, c)

    def _pipelined(self, c: _Packet, payload: bytes) -> None:
        """The requests of a segment that holds several, in order."""
        for n, piece in enumerate(split_requests(payload)):
            req = parse_http_request(piece)
            if req is None:
                return
            if n:
                c.reset_src()  # a forwarded-for address is the previous request's
            self._http_request(c, req)

    def _http_request(self, c: _Packet, req: HttpRequest) -> None:
        """One request's checks (`_replayed`, else on the packet)."""
        fwd = forwarded_for(req.text) if self.settings.use_heuristics else None
        if not self._replayed(c, req, fwd):
            self._request_plan(c, req, fwd)

    def _requests_in_bulk(self, requests: list[Lone], out: list[Item]) -> None:
        """A batch's lone requests. One without a body, to an unlisted destination, is settled once
        (`httpbatch.settle`, the batch's new ones together) and the answer kept (bounded; `()` for
        "check it"): a request whose checks certainly report nothing but the web observation gets
        that observation, and needs no plan; the others take the per-request checks
        (`_http_request`). When every request is new and settleable (the usual batch on a real
        link), the answers come in request order and are not looked up again."""
        observe = self.settings.use_heuristics and self.settings.web_scanning
        keys = [fields[0] for _, fields in requests]  # method, path, Host, User-Agent
        known, new = self._settled.lookup(keys)
        fresh = [key for (cols, fields), key in zip(requests, keys, strict=True)
                 if not fields[1] and cols[7] < 0 and key not in known]
        if new is keys and len(fresh) == len(keys):
            answers = httpbatch.settle(self.index, self.settings, self.domains, keys)
            if all(answers):  # the usual batch: every request settled (and settleable: none is checked)
                self._settled.put_many(zip(keys, answers, strict=True))
                if observe:
                    out += [(cols[0], OBS_WEB, cols[1:7] + detail)
                            for (cols, _), detail in zip(requests, answers, strict=True)]
                return
            self._settled.put_many(dict(zip(keys, [detail or () for detail in answers], strict=True)))
        else:
            if fresh:
                unique = list(dict.fromkeys(fresh))
                settled = dict(zip(unique, [detail or () for detail in httpbatch.settle(
                    self.index, self.settings, self.domains, unique)], strict=True))
                self._settled.put_many(settled)
                known.update(settled)
            answers = [known.get(key) for key in keys]
        for (cols, fields), detail in zip(requests, answers, strict=True):
            if not detail or fields[1] or cols[7] >= 0:
                self._http_request(_packet(cols, out), HttpRequest(*fields[0], *fields[1:]))
            elif observe:
                out.append((cols[0], OBS_WEB, cols[1:7] + detail))

    def _replayed(self, c: _Packet, req: HttpRequest, fwd: str | None) -> bool:
        """Replay a request's plan onto the packet: recorded the second time a request is seen, and
        replayed after that. False the first time (the caller checks it on the packet, which then
        knows whether its destination is private): recording a plan for a request seen once was
        wasted work."""
        key = (req.method, req.path, req.host, req.user_agent, req.body, fwd, c.dport, c.dst_entry,
               _private_addr(c.raw_dst))
        plan = self._requests.get(key)
        if plan is _BY_DESTINATION:
            plan = self._requests.get((*key, c.raw_dst))
        if plan is None:
            keep = len(req.path) + len(req.body) + len(req.host or "") + len(req.user_agent or "") <= PLAN_KEY_CHARS
            seen = hash(key)
            if not keep or self._once.pop(seen, True):  # first sighting
                if keep:
                    self._once.put(seen, False)
                c.private_dst = key[-1]
                return False
            plan = _Plan(c, key[-1])
            self._request_plan(plan, req, fwd)
            plan.packet = None
            self._keep_plan(key, plan, c.raw_dst)
        for action in plan.actions:
            if action is _FORWARD:
                c.forward(fwd or "")
            elif len(action) == 2:
                c.observe(*action)
            else:
                c.event(*action)
        return True

    def _keep_plan(self, key: tuple, plan: _Plan, dst: Addr) -> None:
        """A plan that spelled the destination out is kept for that destination only. Whether it
        does is decided by what the key holds (no Host header, a listed destination), so a key
        always needs the destination or never does."""
        requests = self._requests
        if plan.used_dst:
            requests.put(key, _BY_DESTINATION)
            requests.put((*key, dst), plan)
        else:
            requests.put(key, plan)

    def _request_plan(self, c: _Plan | _Packet, req: HttpRequest, fwd: str | None) -> None:
        """Maltrail's request checks (spec 2.6), on the packet or recorded into a plan: their outcome depends only
        on the request, the destination and its port, never on time, source or source port."""
        ix, st = self.index, self.settings
        heur = st.use_heuristics
        if req.user_agent:  # before any early return: a listed User-Agent is reported whatever the request
            e = ix.lookup_string(UA_PREFIX + req.user_agent.lower())
            if e >= 0:
                self._entry_event(c, "UA", UA_PREFIX + req.user_agent, e)
        path = req.path.lower()
        if req.host is not None:
            host = req.host.strip().lower()
            if host.endswith(":80"):
                host = host[:-3]
            bare = host.split(":", 1)[0]
            if host[:1].isalpha() and c.dst_entry >= 0:
                self._entry_event(c, "IP", f"{c.dst} ({bare})", c.dst_entry)
            elif _IP4ISH.fullmatch(host) and http_rules.iot_download(host, path) and not c.private_dst:
                c.event("HTTP", f"({host}){path}", "potential iot-malware download (suspicious)", HEURISTIC_REF)
                return
            elif st.check_host_domains:
                self._domain(c, bare)
        else:
            host = c.dst
            if heur and st.check_missing_host:
                c.event("HTTP", f"{c.dst}{path}", "missing host header (suspicious)", HEURISTIC_REF)
        post = req.body
        url = host + path
        if heur and path.startswith("/"):
            if st.web_scanning:
                c.observe(OBS_WEB, *httpbatch.web_details([path]))
        elif heur and c.dport == 80 and path.startswith("http://") and http_rules.proxy_probe(path):
            target = path[len("http://"):].split("/", 1)[0].split(":", 1)[0].rstrip(".")
            if not ix.is_whitelisted_domain(target):
                rest = path[len("http://") + len(path[len("http://"):].split("/", 1)[0]) + 1:]
                trail = f"http://{target}/" + (f"({rest})" if rest else "")
                c.event("HTTP", trail, "potential proxy probe (suspicious)", HEURISTIC_REF)
                return
        elif "://" in path and not _is_rce(unquote(path)):
            url = path.split("://", 1)[1]
            if "/" not in url:
                url += "/"
            host, _, rest = url.partition("/")
            host = host[:-3] if host.endswith(":80") else host
            path = "/" + rest
            url = host + path
            self._domain(c, host.split(":", 1)[0])
        elif req.method == "CONNECT":
            host, _, rest = path.partition("/")
            host = host[:-3] if host.endswith(":80") else host
            path = "/" + rest
            url = host + path
            self._domain(c, host.split(":", 1)[0])
        if heur and req.user_agent:
            trail = http_rules.suspicious_user_agent(unquote(req.user_agent).strip())
            if trail:
                c.event("UA", trail, "user agent (suspicious)", HEURISTIC_REF)
        if ix.is_whitelisted_domain(host):
            return
        if self._url_trails(c, req.method, host, path, post, url):
            return
        if not heur:
            return
        if fwd:
            c.forward(fwd)
        enc_path = http_rules.encode_for_trail(path)
        category = http_rules.suspicious_request(path, None, c.private_dst)
        if category:
            c.event("URL", f"{host}({enc_path})", f"{category} (suspicious)", HEURISTIC_REF)
            return
        if post:
            category = http_rules.suspicious_request(unquote(post), post, False)
            if category:
                body = http_rules.encode_for_trail(post)
                c.event("HTTP", f"{host}({enc_path} \\({req.method} {body}\\))", f"{category} (suspicious)",
                        HEURISTIC_REF)
                return
        info = http_rules.direct_download(host, path, c.private_dst) or http_rules.suspicious_path(path)
        if info:
            c.event("URL", f"{host}({enc_path})", info, HEURISTIC_REF)

    def _url_trails(self, c: _Plan | _Packet, method: str, host: str, path: str, post: str, url: str) -> bool:
        """Maltrail's URL keys in order (each candidate bare, then with the host; then `host/`); the
        first that is a trail is reported. The prefilter bits of all keys are tested first."""
        ix = self.index
        path = path.replace("//", "/")
        keys = httpbatch.url_keys(host, path, post)
        for i in ix.string_maybe_positions(keys):
            key = keys[i]
            e = ix.lookup_string(key)
            if e < 0:
                continue
            if i == len(keys) - 1:
                self._entry_event(c, "URL", key, e)
            elif "?" not in path and "?" in key and post:
                self._entry_event(c, "HTTP", f"{host}({path} \\({method} {post}\\))", e)
            else:
                self._entry_event(c, "URL", _bracket(url, key), e)
            return True
        return False

    def _http_response(self, c: _Packet, payload: bytes) -> None:
        resp = parse_http_response(payload)
        if resp is None:
            return
        sinkhole = http_rules.sinkhole_response(resp)
        if sinkhole:
            c.event("HTTP", sinkhole, "sinkhole response (malware)", HEURISTIC_REF)
        elif resp.title and http_rules.SEIZED_TITLE_RE.search(resp.title):
            c.event("HTTP", resp.title, "seized domain (suspicious)", HEURISTIC_REF)
        if resp.content_type in http_rules.SUSPICIOUS_CONTENT_TYPES:
            c.event("HTTP", resp.content_type, "content type (suspicious)", HEURISTIC_REF)


class _NamedChecks:
    """The decoder's bytes of a DNS batch's names (queries, then NXDOMAIN answers) and the name
    filter's answer for all of them from one pass (`suffixes_maybe_listed`), made when first
    asked: the query and the NXDOMAIN checks of a batch of new names share its fixed cost."""

    __slots__ = ("_index", "_batch", "_both")

    def __init__(self, index: TrailIndex, batch: dnsbatch.DnsBatch) -> None:
        self._index, self._batch = index, batch
        self._both: tuple[NameBytes, np.ndarray] | None = None

    def _all(self) -> tuple[NameBytes, np.ndarray] | None:
        b = self._batch
        if self._both is None and (named := b.named()) is not None:
            self._both = named, self._index.suffixes_maybe_listed(b.query_names + b.nx_names, named)
        return self._both

    def queries(self) -> tuple[NameBytes | None, np.ndarray | None]:
        """The query names' bytes and filter answers (None, None: the decoder has no bytes)."""
        both = self._all()
        if both is None:
            return None, None
        k = len(self._batch.query_names)
        return both[0].head(k), both[1][:k]

    def nx_maybe(self) -> np.ndarray | None:
        """The NXDOMAIN answers' filter answers (None: the decoder has no bytes)."""
        both = self._all()
        return None if both is None else both[1][len(self._batch.query_names) :]


def _context(p: Parsed, row: int, out: list[Item], dst_entry: int, src_entry: int, dstport_entry: int) -> _Packet:
    """The packet context of one row, for the rare packet of a bulk path that reports something."""
    (src,), (dst,) = row_addresses(p, np.array([row]))
    proto = "TCP" if int(p.proto[row]) == PROTO_TCP else "UDP"
    return _Packet(row, int(p.sec[row]), int(p.usec[row]), src, int(p.sport[row]), dst, int(p.dport[row]), proto,
                   out, dst_entry, src_entry, dstport_entry)


def _is_rce(text: str) -> bool:
    return any(name == "potential remote code execution" and rx.search(text) for name, rx in _RCE)


def _packet(cols: Cols, out: list[Item]) -> _Packet:
    """The packet context of a TCP row given by its columns (a request's, a ClientHello's), for the
    few that need one."""
    row, sec, usec, src, sport, dst, dport, dst_entry, src_entry, dstport_entry = cols
    return _Packet(row, sec, usec, src, sport, dst, dport, "TCP", out, dst_entry, src_entry, dstport_entry)


def _bracket(url: str, hit: str) -> str:
    """The url with every occurrence of the hit kept and the other pieces bracketed."""
    if hit == url:
        return url
    if hit not in url:
        return f"({url})"
    return hit.join(f"({piece})" if piece else "" for piece in url.split(hit))


class _Packet:
    """One inspected packet and where its items go. Address texts are spelled out on first use:
    most inspected packets report nothing and never need them. Observations always carry the
    addresses as they came, so the aggregator keys one address one way."""

    __slots__ = ("row", "sec", "usec", "_src", "_src_text", "sport", "_dst", "_dst_text", "dport", "proto", "out",
                 "dst_entry", "src_entry", "dstport_entry", "private_dst")

    def __init__(self, row: int, sec: int, usec: int, src: Addr, sport: int, dst: Addr, dport: int, proto: str,
                 out: list[Item], dst_entry: int, src_entry: int, dstport_entry: int) -> None:
        self.row, self.sec, self.usec, self.proto, self.out = row, sec, usec, proto, out
        self._src, self.sport, self._dst, self.dport = src, sport, dst, dport
        self._src_text: str | None = None
        self._dst_text: str | None = None
        self.dst_entry, self.src_entry, self.dstport_entry = dst_entry, src_entry, dstport_entry
        self.private_dst = False  # set by the HTTP checks, which read it

    @property
    def src(self) -> str:
        if self._src_text is None:
            self._src_text = addr_text(self._src)
        return self._src_text

    @src.setter
    def src(self, text: str) -> None:
        """The source as events show it (a forwarded-for address appended)."""
        self._src_text = text

    def reset_src(self) -> None:
        """The source as it came again, for the next request of a pipelined segment."""
        self._src_text = None

    def forward(self, fwd: str) -> None:
        """From here on the source reads `source,forwarded-for address`."""
        self.src = f"{self.src},{fwd}"

    @property
    def dst(self) -> str:
        if self._dst_text is None:
            self._dst_text = addr_text(self._dst)
        return self._dst_text

    @property
    def raw_dst(self) -> Addr:
        """The destination as it came (a cache key that costs no formatting)."""
        return self._dst

    def event(self, etype: str, trail: str, info: str, reference: str, tag: tuple = ()) -> None:
        ev: Event = (self.sec, self.usec, self.src, self.sport, self.dst, self.dport, self.proto, etype, trail,
                     info, reference)
        self.out.append((self.row, "event", (ev, *tag)))

    def observe(self, kind: str, detail: tuple) -> None:
        """An observation for the aggregator, addresses as they came (spelled out there if reported)."""
        self.out.append((self.row, kind, (self.sec, self.usec, self._src, self.sport, self._dst, self.dport, *detail)))


_FORWARD = ("forward",)  # plan step: from here on the source reads `source,forwarded-for address`
_BY_DESTINATION = object()  # request-cache value: the plans of this key are kept per destination


class _Plan:
    """What a request's checks report, recorded once and replayed onto every packet that carries
    the same request to the same kind of destination (`PayloadInspector._http`): clients repeat
    requests far more often than they make new ones. Steps are events (etype, trail, info,
    reference, tag), observations (kind, detail) and `_FORWARD`. Reading `dst` marks the plan as
    valid for that destination only."""

    __slots__ = ("packet", "dport", "dst_entry", "private_dst", "used_dst", "actions")

    def __init__(self, packet: _Packet, private_dst: bool) -> None:
        self.packet: _Packet | None = packet
        self.dport, self.dst_entry, self.private_dst = packet.dport, packet.dst_entry, private_dst
        self.used_dst = False
        self.actions: list[tuple] = []

    @property
    def dst(self) -> str:
        assert self.packet is not None, "a plan reads the destination only while it is being recorded"
        self.used_dst = True
        return self.packet.dst

    def event(self, etype: str, trail: str, info: str, reference: str, tag: tuple = ()) -> None:
        self.actions.append((etype, trail, info, reference, tag))

    def observe(self, kind: str, detail: tuple) -> None:
        self.actions.append((kind, detail))

    def forward(self, fwd: str) -> None:
        self.actions.append(_FORWARD)
