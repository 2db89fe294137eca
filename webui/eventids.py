"""Opaque live event ids for scoped users: a keyed permutation of the 64-bit event id.

Global event ids are consecutive, so a scoped user who sees two of them learns how many events
(out of scope too) came in between. A scoped stream sends each id through a four-round Feistel
network keyed with the server's secret (blake2b as the round function): ids still resume
exactly (the server inverts the permutation) but two tokens say nothing about their distance.
"""

from __future__ import annotations

import hashlib
import re

ROUNDS = 4
MASK32 = 0xFFFFFFFF
TOKEN = re.compile(r"[0-9a-f]{16}\Z")


class EventIds:
    def __init__(self, secret: bytes) -> None:
        self.keys = [hashlib.blake2b(secret, person=f"mt-live-{i}".encode(), digest_size=32).digest()
                     for i in range(ROUNDS)]

    def _round(self, i: int, half: int) -> int:
        digest = hashlib.blake2b(half.to_bytes(4, "big"), key=self.keys[i], digest_size=4).digest()
        return int.from_bytes(digest, "big")

    def encode(self, eid: int) -> str:
        left, right = eid >> 32 & MASK32, eid & MASK32
        for i in range(ROUNDS):
            left, right = right, left ^ self._round(i, right)
        return f"{left << 32 | right:016x}"

    def decode(self, token: str) -> int | None:
        if not TOKEN.match(token):
            return None
        value = int(token, 16)
        left, right = value >> 32, value & MASK32
        for i in reversed(range(ROUNDS)):
            left, right = right ^ self._round(i, left), left
        return left << 32 | right
