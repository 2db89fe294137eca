"""DNS message parsing for the sensor: header, first question, A/AAAA answers, TCP framing.

A pure function from bytes to a small record, in the style of h11: no I/O, bounded work, and it
never raises, because every byte of a datagram sent to or from port 53 is attacker-controlled.
Unlike Maltrail, compression pointers are followed (with a hop limit and loop detection); the
detection gates that Maltrail applies on top (standard query, `byte3` values, name validity,
ignored suffixes) are left to the caller, which gets the raw flag bytes to apply them exactly.
"""

from __future__ import annotations

import re
import socket
import struct
from dataclasses import dataclass

_HEADER = struct.Struct("!HHHHHH")
_QUESTION_TAIL = struct.Struct("!HH")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength

MAX_POINTER_HOPS = 16  # compression pointers followed per name
MAX_NAME_WIRE_LENGTH = 255  # RFC 1035 2.3.4: length bytes + labels + the root byte
MAX_QUESTIONS = 16  # questions skipped to reach the answers
MAX_ANSWERS = 64  # answer records examined
MAX_TCP_MESSAGES = 16  # length-prefixed messages read from one TCP segment

TYPE_A = 1
TYPE_AAAA = 28

# Maltrail's VALID_DNS_NAME_REGEX: at least two labels, the last one without `_` or `.`.
_VALID_NAME = re.compile(r"[A-Za-z0-9._-]*\.[A-Za-z0-9-]+")

IGNORED_QUERY_SUFFIXES = frozenset((
    "arpa", "local", "guest", "intranet", "corp", "home", "lan", "intra", "intran", "workgroup",
    "localdomain", "url", "alienvault", "example", "internal", "localnet", "test",
))


@dataclass(frozen=True, slots=True)
class DnsMessage:
    """One parsed DNS message; `byte2`/`byte3` are the raw flag bytes Maltrail gates on."""

    txid: int
    flags: int
    is_query: bool
    opcode: int
    truncated: bool
    rcode: int
    byte2: int
    byte3: int
    qname: str
    qtype: int
    qclass: int
    answers_a: tuple[str, ...]
    answers_aaaa: tuple[bytes, ...]


def _read_name(data: bytes, pos: int) -> tuple[str, int] | None:
    """Decode the name at `pos`; return it (lowercased, no trailing dot) and the offset after it.

    None when the name runs off the end, loops, uses a reserved label type (0x40/0x80) or is
    longer than 255 bytes on the wire. Labels are decoded as latin-1 so that every byte maps to
    one character: non-ASCII bytes then fail name validation instead of silently disappearing.
    """
    labels: list[str] = []
    wire_length = 1  # the root byte
    end = -1  # offset after the name in the record, fixed by the first pointer or the root byte
    seen: set[int] = set()
    size = len(data)
    while pos < size:
        length = data[pos]
        if length >= 0xC0:
            if pos + 1 >= size or len(seen) >= MAX_POINTER_HOPS:
                return None
            if end < 0:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | data[pos + 1]
            if pos in seen:
                return None
            seen.add(pos)
        elif length >= 0x40:
            return None
        elif length == 0:
            return ".".join(labels).lower(), (pos + 1 if end < 0 else end)
        else:
            wire_length += length + 1
            if wire_length > MAX_NAME_WIRE_LENGTH or pos + 1 + length > size:
                return None
            labels.append(data[pos + 1:pos + 1 + length].decode("latin-1"))
            pos += 1 + length
    return None


def _skip_questions(data: bytes, pos: int, count: int) -> int:
    """Offset after `count` more questions, or -1 when one is unreadable or there are too many."""
    if count >= MAX_QUESTIONS:
        return -1
    for _ in range(count):
        name = _read_name(data, pos)
        if name is None:
            return -1
        pos = name[1] + _QUESTION_TAIL.size
    return pos


def _read_answers(data: bytes, pos: int, count: int) -> tuple[tuple[str, ...], tuple[bytes, ...]]:
    """Walk up to `count` resource records from `pos`, keeping A and AAAA rdata in order.

    The class is not checked (Maltrail does not either); a malformed record ends the walk and
    keeps what was read before it.
    """
    a: list[str] = []
    aaaa: list[bytes] = []
    for _ in range(min(count, MAX_ANSWERS)):
        owner = _read_name(data, pos)
        if owner is None or owner[1] + _RR_FIXED.size > len(data):
            break
        rtype, _rclass, _ttl, rdlength = _RR_FIXED.unpack_from(data, owner[1])
        start = owner[1] + _RR_FIXED.size
        pos = start + rdlength
        if pos > len(data):
            break
        if rtype == TYPE_A and rdlength == 4:
            a.append(socket.inet_ntoa(data[start:pos]))
        elif rtype == TYPE_AAAA and rdlength == 16:
            aaaa.append(data[start:pos])
    return tuple(a), tuple(aaaa)


def parse_dns(payload: bytes | memoryview) -> DnsMessage | None:
    """Parse a DNS message; None when there is no readable first question.

    Answers are best effort: the message is still returned when they are cut short.
    """
    data = bytes(payload)
    if len(data) < _HEADER.size:
        return None
    txid, flags, qdcount, ancount, _nscount, _arcount = _HEADER.unpack_from(data)
    if qdcount == 0:
        return None
    question = _read_name(data, _HEADER.size)
    if question is None or question[1] + _QUESTION_TAIL.size > len(data):
        return None
    qname, pos = question
    qtype, qclass = _QUESTION_TAIL.unpack_from(data, pos)
    pos = _skip_questions(data, pos + _QUESTION_TAIL.size, qdcount - 1)
    answers_a, answers_aaaa = _read_answers(data, pos, ancount) if pos >= 0 else ((), ())
    byte2, byte3 = flags >> 8, flags & 0xFF
    return DnsMessage(
        txid=txid, flags=flags, is_query=not (byte2 & 0x80), opcode=(byte2 >> 3) & 0xF,
        truncated=bool(byte2 & 0x02), rcode=byte3 & 0xF, byte2=byte2, byte3=byte3,
        qname=qname, qtype=qtype, qclass=qclass, answers_a=answers_a, answers_aaaa=answers_aaaa,
    )


def tcp_messages(segment: bytes) -> list[bytes]:
    """The complete DNS messages of one TCP segment (RFC 1035 4.2.2: each after a two-byte length).

    Bounded: at most `MAX_TCP_MESSAGES` frames and never past the segment's end. A message that
    does not end inside the segment (split across segments) ends the walk and is skipped."""
    out: list[bytes] = []
    pos, size = 0, len(segment)
    for _ in range(MAX_TCP_MESSAGES):
        start = pos + 2
        end = start + int.from_bytes(segment[pos:start], "big")
        if end > size or start > size:
            break
        out.append(segment[start:end])
        pos = end
    return out


def is_valid_dns_name(name: str) -> bool:
    """Maltrail's VALID_DNS_NAME_REGEX: only names that pass it are checked against trails."""
    return _VALID_NAME.fullmatch(name) is not None


def is_ignored_query(name: str) -> bool:
    """Local/lab names Maltrail never reports (expects a lowercased name, as queries are)."""
    return ".intranet." in name or name.rpartition(".")[2] in IGNORED_QUERY_SUFFIXES
