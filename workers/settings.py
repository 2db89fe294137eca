"""What a worker is told at start, apart from the detection code: the sensor process passes it
without importing the payload parsers and heuristics (the fork server has them)."""

from dataclasses import dataclass


@dataclass
class DetectionSettings:
    """The detection switches a worker needs (from maltrail.toml [detection])."""

    use_heuristics: bool = True
    check_missing_host: bool = False
    check_host_domains: bool = False
    long_domain: bool = True
    web_scanning: bool = True
