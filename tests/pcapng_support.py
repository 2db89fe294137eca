"""pcapng blocks built byte by byte, for tests that need what no writer writes: several
interfaces, timestamp options, blocks between packets, new sections, damaged blocks. Also a
stand-in for libpcap's reads, for replays that must not use them."""

from __future__ import annotations

import struct


def block(btype: int, body: bytes, order: str = "<", length: int | None = None, trailer: int | None = None) -> bytes:
    """A block of type `btype` (its body padded to 4 bytes); `length`, `trailer`: wrong lengths to write."""
    body += b"\0" * (-len(body) % 4)
    total = 12 + len(body)
    return (struct.pack(f"{order}II", btype, total if length is None else length) + body
            + struct.pack(f"{order}I", total if trailer is None else trailer))


def shb(order: str = "<", major: int = 1, minor: int = 0) -> bytes:
    return block(0x0A0D0D0A, struct.pack(f"{order}IHHq", 0x1A2B3C4D, major, minor, -1), order)


def option(code: int, value: bytes, order: str = "<") -> bytes:
    return struct.pack(f"{order}HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def idb(linktype: int = 1, snaplen: int = 65535, options: bytes = b"", order: str = "<") -> bytes:
    if options:
        options += option(0, b"", order)
    return block(1, struct.pack(f"{order}HHI", linktype, 0, snaplen) + options, order)


def resolution(code: int) -> bytes:
    return option(9, bytes((code,)))


def offset(seconds: int) -> bytes:
    return option(14, struct.pack("<q", seconds))


def epb(ticks: int, frame: bytes, interface: int = 0, wire: int | None = None, options: bytes = b"",
        caplen: int | None = None, order: str = "<", **raw: int) -> bytes:
    """An Enhanced Packet Block: `ticks` in the interface's resolution; `caplen`: a wrong one to write."""
    head = struct.pack(f"{order}IIIII", interface, ticks >> 32, ticks & 0xFFFFFFFF,
                       len(frame) if caplen is None else caplen, len(frame) if wire is None else wire)
    return block(6, head + frame + b"\0" * (-len(frame) % 4) + options, order, **raw)


def not_libpcap(*args: object, **kwargs: object) -> None:
    """Stands in for `read_batches` where a replay must read no packet through libpcap."""
    raise AssertionError("read by libpcap")
