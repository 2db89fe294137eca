"""Maltrail's UDP intake (`LOG_SERVER` sensors), kept for drop-in compatibility, with two guards
Maltrail lacks: datagrams are accepted only from `[collect] udp_allow`, and the sender's
timestamp may not choose a day file older than `udp_max_age_days` (nor one after tomorrow).

One datagram is one event: `<epoch> <event line>` or the event line alone (its quoted local
timestamp gives the day). Interior CR/LF become spaces, so no datagram forges a second line.
Refused datagrams are dropped and counted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import re
from pathlib import Path
from typing import Any

from engine.config import CollectConfig, ConfigError

DATE = re.compile(rb"\d{4}-\d{2}-\d{2}\Z")
MAX_OPEN_DAYS = 4
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allow(values: list[str]) -> list[Network]:
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ConfigError(f"[collect] udp_allow: {value!r} is not an address or CIDR") from None
    return out


def parse_udp_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError
    except ValueError:
        raise ConfigError(f"[collect] udp_listen: {text!r}: expected IP:PORT, e.g. 0.0.0.0:8337") from None
    return host, int(port)


class UdpIntake(asyncio.DatagramProtocol):
    """Writes accepted datagrams to `LOG_DIR/YYYY-MM-DD.log` (cached descriptor per day)."""

    def __init__(self, cfg: CollectConfig, log_dir: Path, stats: dict[str, Any]) -> None:
        if not cfg.udp_allow:
            raise ConfigError("[collect] udp_allow: the UDP intake needs an allowlist of sensor addresses")
        self.allow = parse_allow(cfg.udp_allow)
        self.max_age = cfg.udp_max_age_days
        self.log_dir = log_dir
        self.stats = stats
        stats.update(udp_accepted=0, udp_not_allowed=0, udp_too_old=0, udp_garbage=0, udp_last_refused="")
        self._fds: dict[str, int] = {}

    def _allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in net for net in self.allow)

    def day_of(self, data: bytes) -> tuple[dt.date, bytes] | None:
        """(day, event line) of a datagram; None when it is neither Maltrail form."""
        if data[:1].isdigit():
            epoch, _, line = data.partition(b" ")
            try:
                day = dt.datetime.fromtimestamp(float(epoch)).date()
            except (ValueError, OverflowError, OSError):
                return None
            return (day, line) if line else None
        if data[:1] == b'"' and DATE.match(data[1:11]):
            try:
                return dt.date.fromisoformat(data[1:11].decode()), data
            except ValueError:
                return None
        return None

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if not self._allowed(str(addr[0])):
            self.stats["udp_not_allowed"] += 1
            self.stats["udp_last_refused"] = str(addr[0])
            return
        parsed = self.day_of(data.replace(b"\r", b" ").replace(b"\n", b" ").strip())
        if parsed is None:
            self.stats["udp_garbage"] += 1
            return
        day, line = parsed
        today = dt.date.today()
        if day < today - dt.timedelta(days=self.max_age) or day > today + dt.timedelta(days=1):
            self.stats["udp_too_old"] += 1
            return
        name = f"{day.isoformat()}.log"
        fd = self._fds.get(name)
        if fd is None:
            if len(self._fds) >= MAX_OPEN_DAYS:
                os.close(self._fds.pop(next(iter(self._fds))))
            fd = self._fds[name] = os.open(self.log_dir / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, line + b"\n")
        self.stats["udp_accepted"] += 1

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


async def start_udp(cfg: CollectConfig, log_dir: Path, stats: dict[str, Any]) -> tuple[asyncio.DatagramTransport,
                                                                                         UdpIntake]:
    host, port = parse_udp_listen(cfg.udp_listen)
    intake = UdpIntake(cfg, log_dir, stats)
    try:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: intake,
                                                                                  local_addr=(host, port))
    except OSError as exc:
        raise ConfigError(f"[collect] udp_listen: cannot listen on {cfg.udp_listen}: {exc.strerror}") from None
    return transport, intake
