"""QUIC CRYPTO streams reassembled in the aggregator: ClientHellos cut over several datagrams.

Workers read the SNI of a datagram whose own Initials hold it; the CRYPTO chunks of the others
arrive here as observations, in capture order, so the consecutive datagrams of one connection meet
whatever worker handled each. A connection is keyed by its addresses and the client's Source
Connection ID: the DCID changes after a Retry (the client then resends its ClientHello under keys
of the new DCID), the client's SCID does not. State is bounded: MAX_STREAM_BYTES and MAX_CHUNKS
per connection (past either the connection is dropped) and MAX_CONNECTIONS connections (the oldest
evicted). A connection whose SNI was read, or whose ClientHello ended without one, is kept as
finished, so retransmissions report nothing more.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from engine.eventlog import Event
from engine.ipaddr import Addr
from workers.protocols.quic import hello_complete
from workers.protocols.tls import handshake_sni

MAX_STREAM_BYTES = 16384  # past any real ClientHello, post-quantum key shares included
MAX_CHUNKS = 256  # out-of-order chunks waiting per connection
MAX_CONNECTIONS = 4096

SniCheck = Callable[[int, int, Addr, int, Addr, int, str], list[Event]]


class _Stream:
    """The contiguous prefix of one connection's CRYPTO stream and the chunks past a gap."""

    __slots__ = ("prefix", "waiting", "waiting_bytes")

    def __init__(self) -> None:
        self.prefix = bytearray()
        self.waiting: dict[int, bytes] = {}
        self.waiting_bytes = 0

    def add(self, chunks: Sequence[tuple[int, bytes]]) -> bool:
        """Takes the chunks in; False when the connection goes past a bound."""
        for offset, data in chunks:
            if offset + len(data) > MAX_STREAM_BYTES:
                return False
            if offset + len(data) <= len(self.prefix) or len(data) <= len(self.waiting.get(offset, b"")):
                continue  # already held
            self.waiting_bytes += len(data) - len(self.waiting.get(offset, b""))
            self.waiting[offset] = data
        if len(self.waiting) > MAX_CHUNKS or len(self.prefix) + self.waiting_bytes > MAX_STREAM_BYTES:
            return False
        for offset in sorted(self.waiting):  # one pass: the prefix only grows
            if offset > len(self.prefix):
                break
            data = self.waiting.pop(offset)
            self.waiting_bytes -= len(data)
            self.prefix += data[len(self.prefix) - offset :]
        return True


class QuicStreams:
    """`add(observation)` -> the events of a ClientHello whose SNI it completes."""

    def __init__(self, check: SniCheck) -> None:
        self.check = check
        self.connections: OrderedDict[tuple, _Stream | None] = OrderedDict()  # None: finished or dropped
        self.dropped = 0

    def add(self, sec: int, usec: int, src: Addr, sport: int, dst: Addr, dport: int, scid: bytes,
            chunks: Sequence[tuple[int, bytes]]) -> list[Event]:
        key = (src, sport, dst, dport, scid)
        conns = self.connections
        if key in conns:
            stream = conns[key]
            if stream is None:
                return []
        else:
            stream = conns[key] = _Stream()
            if len(conns) > MAX_CONNECTIONS:
                conns.popitem(last=False)
        if not stream.add(chunks):
            conns[key] = None
            self.dropped += 1
            return []
        prefix = bytes(stream.prefix)
        if not prefix:
            return []
        sni = handshake_sni(prefix)
        if sni is None and not hello_complete(prefix) and prefix[0] == 1:
            return []  # wait for more
        conns[key] = None
        return self.check(sec, usec, src, sport, dst, dport, sni) if sni else []
