"""The aggregator's heuristic settings, in a module of their own: reading the configuration
(every command's start) must not import `engine/heuristics.py` and numpy, and the aggregator,
which imports its modules on the sensor's start-up path, must not import the configuration code
(its dataclasses are about 15 ms of imports)."""

from dataclasses import dataclass


@dataclass
class HeuristicSettings:
    """The aggregator's heuristic switches and limits (from maltrail.toml [detection])."""

    use_heuristics: bool = True
    disabled: frozenset[str] = frozenset()
    scan_window: int = 30
    port_scan_threshold: int = 10
    udp_scan_threshold: int = 10
    web_scan_threshold: int = 10
    infection_threshold: int = 32
    max_items_per_key: int = 1024
    max_keys: int = 50_000
    dns_exhaustion_threshold: int = 1000
    dns_exhaustion_window: int = 60
    nxdomain_threshold: int = 20
    max_dns_keys: int = 100_000

    def on(self, name: str) -> bool:
        return self.use_heuristics and name not in self.disabled
