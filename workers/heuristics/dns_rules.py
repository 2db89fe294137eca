"""Name-shape rules of the DNS heuristics (spec 3): DGA-like labels, long domains, the domain a
query counts against for exhaustion, DNSBL-shaped names and NXDOMAIN counting keys.

Pure functions over strings; the state (windows, counts) lives in the aggregator.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from functools import lru_cache

_CONSONANTS = frozenset("bcdfghjklmnpqrstvwxyz")
_DASHED_DIGITS = re.compile(r"[0-9]+(?:-[0-9]+){3}")
_DNSBL_TRAIL = re.compile(r"bl\b")
ENTROPY_REASON = "entropy threshold no such domain (suspicious)"
CONSONANT_REASON = "consonant threshold no such domain (suspicious)"


@lru_cache(maxsize=10_000)
def dga_reason(label: str) -> str | None:
    """Why a label looks machine-generated (Shannon entropy > 3.5 bits/char, or > 9 consonants):
    DGA names that do not resolve are a sign of a bot hunting for its controller."""
    if not label or "-" in label:
        return None
    counts = Counter(label)
    entropy = -sum(n / len(label) * math.log2(n / len(label)) for n in counts.values())
    if entropy > 3.5:
        return ENTROPY_REASON
    if sum(n for ch, n in counts.items() if ch in _CONSONANTS) > 9:
        return CONSONANT_REASON
    return None


def long_domain_trail(name: str) -> str | None:
    """`(<all but last 2>).<last 2>` when the first label is over 24 chars without a dash
    (tunnelling and DGA names; long dashed labels are usually CDN or cloud hostnames)."""
    labels = name.split(".")
    if len(labels) < 2 or len(labels[0]) <= 24 or "-" in labels[0]:
        return None
    if len(labels) == 2:
        trail = f"({labels[0]}).{labels[1]}"
    else:
        trail = f"({'.'.join(labels[:-2])}).{'.'.join(labels[-2:])}"
    return None if "blogspot" in trail else trail


def exhaustion_domain(name: str) -> tuple[str, str] | None:
    """(domain, prefix) a query counts against: the last 3 labels when the 2nd-last is a short
    second-level label (`co.uk`), else the last 2; None for short names and `d-d-d-d` hosts."""
    labels = name.split(".")
    if len(labels) <= 2 or _DASHED_DIGITS.fullmatch(labels[0]):
        return None
    keep = 3 if len(labels) > 3 and len(labels[-2]) <= 3 else 2
    return ".".join(labels[-keep:]), ".".join(labels[:-keep])


def is_dnsbl_shaped(name: str) -> bool:
    """A reversed-IP DNSBL query: more than 4 labels, the first 4 numbers below 256."""
    labels = name.split(".")
    return len(labels) > 4 and all(p.isascii() and p.isdigit() and int(p) < 256 for p in labels[:4])


def looks_like_dnsbl_trail(trail: str) -> bool:
    """Mail servers flood DNSBL zones (`zen.spamhaus.org`, `*.sorbs.net` ...) by design: not exhaustion."""
    return _DNSBL_TRAIL.search(trail) is not None


def nx_counted(name: str, is_whitelisted: Callable[[str], bool], is_trail: Callable[[str], bool]) -> bool:
    """Whether an NXDOMAIN for this name counts towards floods and DGA checks: not a numeric TLD,
    not a DNSBL lookup, not whitelisted, and no suffix of it a trail (those are reported anyway)."""
    if not nx_shape_counted(name) or is_whitelisted(name):
        return False
    labels = name.split(".")
    return not any(is_trail(".".join(labels[k:])) for k in range(len(labels)))


def nx_shape_counted(name: str) -> bool:
    """`nx_counted` of a name none of whose suffixes is whitelisted or a trail: its shape alone
    (not a numeric TLD, not a DNSBL lookup), without spelling out its suffixes."""
    return not name.rpartition(".")[2].isdigit() and not (name.count(".") >= 4 and is_dnsbl_shaped(name))


def nx_keys(name: str) -> tuple[str, ...]:
    """NXDOMAIN counting keys: the name, and `*.<last 2 labels>` when it has at least two dots."""
    if name.count(".") >= 2:
        return name, "*." + ".".join(name.split(".")[-2:])
    return (name,)
