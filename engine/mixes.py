"""Traffic mixes and `maltrail bench` defaults: plain data, light to import (the command's parser
lists them without loading the traffic generator or the benchmark)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PACKETS = 1_000_000
DEFAULT_WORKERS = (1, 2, 4)
DEFAULT_TRAIL_ROWS = 1_500_000


@dataclass(frozen=True)
class UniqueShares:
    """Per-packet shares of the `unique` mix (the rest is bulk TCP data of long flows); `ipv6` is the
    share of flows of every kind carried over IPv6. Parameters so that figures can be checked to
    hold when the proportions move."""

    dns: float = 0.08  # queries and their answers
    http: float = 0.02  # whole HTTP flows: handshake, request, response, FIN exchange
    tls: float = 0.02  # whole TLS flows: ClientHello, server flight, bulk records
    quic: float = 0.01  # client Initials and the server's first answer
    syn: float = 0.01  # lone SYNs, never answered
    udp: float = 0.02  # other UDP (STUN, WireGuard, RTP-like)
    icmp: float = 0.005  # echo requests and replies
    ipv6: float = 0.04

    def kinds(self) -> dict[str, float]:
        """Packet share of each kind, bulk included."""
        shares = {"dns": self.dns, "http": self.http, "tls": self.tls, "quic": self.quic, "syn": self.syn,
                  "udp": self.udp, "icmp": self.icmp}
        rest = 1.0 - sum(shares.values())
        if rest < 0 or min(shares.values()) < 0 or not 0 <= self.ipv6 <= 1:
            raise ValueError("unique mix shares must be >= 0 and sum to at most 1")
        return {**shares, "bulk": rest}


# Flow kinds and their weights (per flow, not per packet) for each traffic mix. `mixed` is the
# realistic default: ~300-byte mean frame, ~25 % DNS. The others stress one cost: big frames
# (`bulk`: 1,400-byte data frames and a GRO receiver's stretch ACKs), payload inspection
# (`dns-heavy`, `http-heavy`), or per-packet overhead with nothing to inspect (`syn-flood`).
# `unique` is the other way round: per-packet shares (`UniqueShares`) and every name, path,
# User-Agent, SNI and client port new, so no cache of the sensor ever hits.
MIXES: dict[str, dict[str, int] | UniqueShares] = {
    "unique": UniqueShares(),
    "mixed": {"dns4": 115, "dns6": 10, "http": 8, "tls4": 11, "tls6": 2, "quic4": 4, "quic6": 1, "scan": 70,
              "ntp": 12, "syslog": 20, "ping": 10},
    "bulk": {"bulk": 30, "dns4": 10, "tls4": 2},
    "dns-heavy": {"dns4": 200, "dns6": 25, "http": 2, "tls4": 3, "scan": 10, "ntp": 5, "ping": 2},
    "http-heavy": {"http": 60, "dns4": 20, "tls4": 4, "scan": 4},
    "syn-flood": {"synflood": 400, "dns4": 10, "tls4": 1},
}
