"""Traffic mixes and `maltrail bench` defaults: plain data, light to import (the command's parser
lists them without loading the traffic generator or the benchmark)."""

DEFAULT_PACKETS = 1_000_000
DEFAULT_WORKERS = (1, 2, 4)
DEFAULT_TRAIL_ROWS = 1_500_000

# Flow kinds and their weights (per flow, not per packet) for each traffic mix. `mixed` is the
# realistic default: ~300-byte mean frame, ~25 % DNS. The others stress one cost: big frames
# (`bulk`: 1,400-byte data frames and a GRO receiver's stretch ACKs), payload inspection
# (`dns-heavy`, `http-heavy`), or per-packet overhead with nothing to inspect (`syn-flood`).
MIXES: dict[str, dict[str, int]] = {
    "mixed": {"dns4": 115, "dns6": 10, "http": 8, "tls4": 11, "tls6": 2, "quic4": 4, "quic6": 1, "scan": 70,
              "ntp": 12, "syslog": 20, "ping": 10},
    "bulk": {"bulk": 30, "dns4": 10, "tls4": 2},
    "dns-heavy": {"dns4": 200, "dns6": 25, "http": 2, "tls4": 3, "scan": 10, "ntp": 5, "ping": 2},
    "http-heavy": {"http": 60, "dns4": 20, "tls4": 4, "scan": 4},
    "syn-flood": {"synflood": 400, "dns4": 10, "tls4": 1},
}
