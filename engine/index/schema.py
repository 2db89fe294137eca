"""What the index stores about each entry: its kind and facts about its info, as small ints.

Shared by the builder and every reader, so the hot path never needs the builder's imports.
"""

from __future__ import annotations

UA_PREFIX = "ua:"  # the key of a User-Agent trail (the workers look them up without the trail loader)

# Entry flags: facts about an entry's info that the hot path tests without string work.
F_ATTACKER = 1
F_PARKING_SITE = 2
F_MALWARE = 4
F_SINKHOLE = 8
F_PARKING = 16
F_SUSPICIOUS = 32
F_DYNAMIC = 64

_FLAG_WORDS = (
    (F_ATTACKER, ("attacker",)),
    (F_PARKING_SITE, ("parking site",)),
    (F_MALWARE, ("malware",)),
    (F_SINKHOLE, ("sinkhole",)),
    (F_PARKING, ("parking",)),
    (F_SUSPICIOUS, ("suspicious",)),
    (F_DYNAMIC, ("dynamic", "free web")),
)

# Bits of a string hash that index the string prefilter bitmap (2^24 bits = 2 MiB: the index
# stays smaller than the equivalent trails.csv; about 8% of misses on the full set get past it).
STRING_PREFILTER_BITS = 24

# Entry kinds.
K_STRING, K_IP4, K_IP4PORT, K_IP6, K_IP6PORT, K_CIDR4, K_CIDR6 = range(7)


def info_flags(info: str) -> int:
    low = info.lower()
    flags = 0
    for bit, words in _FLAG_WORDS:
        if any(w in low for w in words):
            flags |= bit
    return flags
