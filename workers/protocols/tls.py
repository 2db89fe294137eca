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


def handshake_sni(message: bytes | memoryview) -> str | None:
    """SNI of a ClientHello handshake message (type, 24-bit length, body) that may be cut short.

    Shared by TLS over TCP (the first record's body) and QUIC (the reassembled CRYPTO stream). A cut
    message still yields its SNI when the server_name extension itself was captured whole."""
    data = message if type(message) is bytes else bytes(message)
    return _sni(data, 0, len(data))


def client_hello_sni(payload: bytes | memoryview) -> str | None:
    """SNI of a TCP payload that starts with a TLS handshake record carrying a ClientHello."""
    n = len(payload)
    if n < 9 or payload[0] != HANDSHAKE or payload[1] != 3:
        return None
    size = payload[3] << 8 | payload[4]
    if size > MAX_RECORD:
        return None
    return _sni(payload if type(payload) is bytes else bytes(payload), 5, n - 5 if n - 5 < size else size)


def _sni(data: bytes, base: int, avail: int) -> str | None:
    """`handshake_sni` of the message at data[base:], of which `avail` bytes were captured.

    One function, lengths read inline and no copy of the message: a helper call per field, or
    per part (server_name list, host name), cost more than the rest of the walk."""
    if avail < 39 or data[base] != CLIENT_HELLO or data[base + 38] > 32:
        return None
    limit = base + avail  # captured end
    end = base + 4 + (data[base + 1] << 16 | data[base + 2] << 8 | data[base + 3])  # declared end: fields must fit
    pos = base + 39 + data[base + 38]  # legacy_version, random, session id
    if pos + 2 > limit:
        return None
    pos += 2 + (data[pos] << 8 | data[pos + 1])  # cipher suites
    if pos + 1 > limit:
        return None
    pos += 1 + data[pos]  # compression methods
    if pos + 2 > (limit if limit < end else end):
        return None
    ext_end = pos + 2 + (data[pos] << 8 | data[pos + 1])
    if ext_end > end:
        return None
    pos += 2
    stop = limit if limit < ext_end else ext_end
    while pos + 4 <= stop:
        body = pos + 4
        pos = body + (data[pos + 2] << 8 | data[pos + 3])
        if pos > ext_end:
            return None
        if (data[body - 4] << 8 | data[body - 3]) == EXT_SERVER_NAME:  # RFC 6066 3: its first host_name
            if pos > limit or body + 2 > pos:
                return None
            list_end = body + 2 + (data[body] << 8 | data[body + 1])
            if list_end > pos:
                return None
            at = body + 2
            while at + 3 <= list_end:
                kind, size = data[at], data[at + 1] << 8 | data[at + 2]
                at += 3
                if at + size > list_end:
                    return None
                if kind == 0:  # a plain ASCII hostname, lower-cased; IDNA names arrive as `xn--` labels
                    if not 0 < size <= MAX_HOSTNAME:
                        return None
                    name = data[at : at + size].lower()  # ASCII letters only; other bytes then fail the pattern
                    return name.decode("ascii") if _HOSTNAME.fullmatch(name) else None
                at += size
            return None
    return None


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
