"""TLS handshake fields for the SNI and certificate hooks (spec 2.8).

Pure functions over one TCP segment (or a QUIC CRYPTO stream): every length is checked against both
what the message declares and what was captured, so a cut or hostile payload yields None, never an
exception, and the work is one pass over at most the payload.
"""

from __future__ import annotations

import hashlib
import re

HANDSHAKE = 0x16
CLIENT_HELLO, CERTIFICATE = 1, 11
EXT_SERVER_NAME = 0
MAX_HOSTNAME = 253
MAX_RECORD = 16384 + 2048  # TLSCiphertext limit (RFC 8446 5.2): anything longer is not TLS

_HOSTNAME = re.compile(rb"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


def _u16(data: bytes, pos: int) -> int:
    return (data[pos] << 8) | data[pos + 1]


def _u24(data: bytes, pos: int) -> int:
    return (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]


def _hostname(raw: bytes) -> str | None:
    """Lower-cased name if it is a plain ASCII hostname; IDNA names arrive as `xn--` labels already."""
    if not 0 < len(raw) <= MAX_HOSTNAME:
        return None
    name = raw.lower()  # bytes.lower touches ASCII letters only; other bytes then fail the pattern
    return name.decode("ascii") if _HOSTNAME.fullmatch(name) else None


def _server_name(data: bytes, pos: int, end: int) -> str | None:
    """First host_name of a server_name extension body data[pos:end] (RFC 6066 3)."""
    if pos + 2 > end:
        return None
    list_end = pos + 2 + (data[pos] << 8 | data[pos + 1])
    if list_end > end:
        return None
    pos += 2
    while pos + 3 <= list_end:
        name_type, size = data[pos], data[pos + 1] << 8 | data[pos + 2]
        pos += 3
        if pos + size > list_end:
            return None
        if name_type == 0:
            return _hostname(data[pos : pos + size])
        pos += size
    return None


def handshake_sni(message: bytes | memoryview) -> str | None:
    """SNI of a ClientHello handshake message (type, 24-bit length, body) that may be cut short.

    Shared by TLS over TCP (the first record's body) and QUIC (the reassembled CRYPTO stream). A cut
    message still yields its SNI when the server_name extension itself was captured whole. Lengths
    are read inline: a helper call per field cost more than the rest of the walk.
    """
    data = message if type(message) is bytes else bytes(message)
    avail = len(data)
    if avail < 39 or data[0] != CLIENT_HELLO or data[38] > 32:
        return None
    end = 4 + (data[1] << 16 | data[2] << 8 | data[3])  # declared end: fields must fit in it; `avail`: captured
    pos = 4 + 2 + 32 + 1 + data[38]  # legacy_version, random, session id
    if pos + 2 > avail:
        return None
    pos += 2 + (data[pos] << 8 | data[pos + 1])  # cipher suites
    if pos + 1 > avail:
        return None
    pos += 1 + data[pos]  # compression methods
    stop = min(avail, end)
    if pos + 2 > stop:
        return None
    ext_end = pos + 2 + (data[pos] << 8 | data[pos + 1])
    if ext_end > end:
        return None
    pos += 2
    stop = min(avail, ext_end)
    while pos + 4 <= stop:
        ext_type, size = data[pos] << 8 | data[pos + 1], data[pos + 2] << 8 | data[pos + 3]
        pos += 4
        if pos + size > ext_end:
            return None
        if ext_type == EXT_SERVER_NAME:
            return _server_name(data, pos, pos + size) if pos + size <= avail else None
        pos += size
    return None


def client_hello_sni(payload: bytes | memoryview) -> str | None:
    """SNI of a TCP payload that starts with a TLS handshake record carrying a ClientHello."""
    if len(payload) < 9 or payload[0] != HANDSHAKE or payload[1] != 3:
        return None
    size = payload[3] << 8 | payload[4]
    if size > MAX_RECORD:
        return None
    return handshake_sni(bytes(payload[5 : 5 + size]))


def server_certificate_sha1(payload: bytes | memoryview) -> str | None:
    """SHA-1 (hex) of the first certificate of a plaintext (TLS <= 1.2) Certificate message.

    The handshake records at the start of the segment are joined (a message may span records);
    the hash is taken only when that first certificate was captured whole.
    """
    data = bytes(payload)
    stream, pos = bytearray(), 0
    while pos + 5 <= len(data) and data[pos] == HANDSHAKE and data[pos + 1] == 3:
        size = _u16(data, pos + 3)
        stream += data[pos + 5 : pos + 5 + size]
        pos += 5 + size
    pos = 0
    while pos + 4 <= len(stream):
        msg_type, size = stream[pos], _u24(stream, pos + 1)
        if msg_type == CERTIFICATE:
            if size < 6 or pos + 10 > len(stream):
                return None
            chain, first = _u24(stream, pos + 4), _u24(stream, pos + 7)
            start = pos + 10
            if not (first > 0 and first + 3 <= chain and chain + 3 <= size and start + first <= len(stream)):
                return None
            cert = stream[start : start + first]
            return hashlib.sha1(cert).hexdigest() if cert[0] == 0x30 else None  # DER SEQUENCE
        pos += 4 + size
    return None
