"""Maltrail's threat grouping: which events make one threat.

- A trail's `(sub)` parts are dropped (`(www).pastebin.com` joins `pastebin.com`), as are edge
  dots and spaces: one threat per (source, normalised trail).
- Heuristics that report many names for one cause make one threat per source: DGA-like names
  (`... threshold no such domain`, `dga`), NXDOMAIN floods (`excessive no such domain`, `flood`)
  and DNS exhaustion (`dns exhaustion`). A bot hunting for its controller is one threat, not one
  per generated name.

- A trail seen from more than FLOOD_SOURCES distinct sources is one threat for all of them
  (Maltrail's "flood"): when its next new source arrives, the trail's per-source threats are
  merged into it (`webui.store`), and from then on every source of that trail joins it.

The raw trails of a threat's events are kept as its distinct values (Maltrail's "…" list). The
threat id is a hash of the group key, so it is the same across reloads, rebuilds and servers;
for a plain trail without `(sub)` parts it is the id a (source, trail) pair always had.
"""

from __future__ import annotations

import hashlib
import re

FLOOD_SOURCES = 50  # a trail seen from more sources than this is one threat (Maltrail's "flood")
FLOOD_MARK = "\x01"  # group key of a flood threat: the mark and the trail's (no source)
_PARENS = re.compile(r"\([^()]*\)")
KINDS = (("dns exhaustion", "exhaustion"), ("threshold no such domain", "dga"), ("dga", "dga"),
         ("excessive no such domain", "flood"), ("flood", "flood"))


def normalize_trail(trail: str) -> str:
    """`(www).pastebin.com` -> `pastebin.com`; a trail that is only parentheses stays as it is."""
    if "(" not in trail:
        return trail.strip(" .") or trail
    return _PARENS.sub("", trail).strip(" .") or trail


def kind_of(info: str) -> str:
    """'' for a plain trail threat, else the per-source heuristic family."""
    low = info.lower()
    for needle, kind in KINDS:
        if needle in low:
            return kind
    return ""


def group_key(trail: str, info: str) -> tuple[str, str]:
    """(group key, display trail): the key is the normalised trail, or `\\x00<kind>` for the
    per-source families; the display trail is the normalised trail of the event."""
    norm = normalize_trail(trail)
    kind = kind_of(info)
    return ("\x00" + kind if kind else norm), norm


def threat_tid(src_ip: str, key: str) -> str:
    """Stable opaque id of a group: the same across rebuilds and servers."""
    return hashlib.blake2b(f"{src_ip}\x00{key}".encode("utf-8", "replace"), digest_size=8).hexdigest()


def flood_tid(key: str) -> str:
    """Stable id of the flood threat of a trail's group key (no source)."""
    return threat_tid("", FLOOD_MARK + key)


def trail_rule_sql(column: str) -> str:
    """SQL test that suppression rule `s.trail` covers the trail in `column`: the trail itself or
    any of its subdomains (`pastebin.com` covers `www.pastebin.com`, never `notpastebin.com`)."""
    return (f"(s.trail = '' OR {column} = s.trail OR (length({column}) > length(s.trail) "
            f"AND substr({column}, -length(s.trail) - 1) = '.' || s.trail))")
