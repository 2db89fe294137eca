"""Dotted quads (and ``quad:port``) among many keys, parsed a character column at a time.

The index builder types 280 k address-like keys of the generated set this way, and the reader
of a built ``trails.csv`` finds the keys a whitelisted range covers; one Python parse per key
cost about 5 µs.
"""

from __future__ import annotations

import numpy as np

from engine.index.schema import K_IP4, K_IP4PORT

_IP4_PORT_WIDTH = len("255.255.255.255:65535")


def ip4_columns(arena: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kind and value of keys spelled ``a.b.c.d`` or ``a.b.c.d:port``, parsed a character column at a time.

    A key gets K_IP4 (value: the address) or K_IP4PORT (``address << 16 | port``) when it is ASCII
    digits with octets of 1-3 digits <= 255 and a port of digits <= 65535, which is exactly when
    `parse_ip4` / `parse_ip_port` accept it; every other key gets 0 and is left to them.
    """
    kind = np.zeros(len(starts), dtype=np.uint8)
    value = np.zeros(len(starts), dtype=np.uint64)
    width = _IP4_PORT_WIDTH
    short = np.flatnonzero(lengths <= width)
    padded = np.concatenate([arena, np.zeros(width, dtype=np.uint8)])
    chars = padded[starts[short, None] + np.arange(width)]
    beyond = np.arange(width) >= lengths[short, None]
    other = ((chars < ord("0")) | (chars > ord(":"))) & (chars != ord(".")) & ~beyond
    chars[beyond] = 0  # ignored by the walk
    # only keys of digits, three dots and at most one colon go through the column walk
    shaped = ((chars == ord(".")).sum(axis=1) == 3) & ((chars == ord(":")).sum(axis=1) <= 1) & ~other.any(axis=1)
    rows = short[shaped]
    chars = chars[shaped].T.copy()
    ok = np.ones(len(rows), dtype=bool)
    field = np.zeros(len(rows), dtype=np.int8)  # dots and colon seen
    address = np.zeros(len(rows), dtype=np.int64)
    number = np.zeros(len(rows), dtype=np.int32)  # the digits since the last separator, saturated
    digits = np.zeros(len(rows), dtype=np.int32)
    for char in chars:
        digit = (char >= ord("0")) & (char <= ord("9"))
        separator = (char == ord(".")) | (char == ord(":"))
        octet = (digits >= 1) & (digits <= 3) & (number <= 255)
        ok &= ~separator | (octet & ((char == ord(":")) == (field == 3)))
        number = np.where(digit, np.minimum(number * 10 + char - ord("0"), 1 << 20), number)
        digits += digit
        address = np.where(separator, address << 8 | number, address)
        field += separator
        number[separator] = 0
        digits[separator] = 0
    ip4 = ok & (field == 3) & (digits >= 1) & (digits <= 3) & (number <= 255)
    ip4port = ok & (field == 4) & (digits >= 1) & (number <= 65535)
    kind[rows[ip4]] = K_IP4
    value[rows[ip4]] = address[ip4] << 8 | number[ip4]
    kind[rows[ip4port]] = K_IP4PORT
    value[rows[ip4port]] = address[ip4port] << 16 | number[ip4port]
    return kind, value
