"""Wildcard domain trails (regexes such as `byethost[0-9]+\\.com`) searched without running them all.

Python's `re` tries every alternative of a combined pattern at every position of a name (about
35 µs per name for Maltrail's 27 wildcards), and even one search per pattern costs more than the
rest of a name's checks. The Hyperscan prefilter names the few patterns that may match; only
those are searched, and the result is the one the combined pattern would give: the leftmost
match, the earliest pattern at that position.
"""

from __future__ import annotations

import re

from workers.heuristics.prefilter import PatternSet


class WildcardMatcher:
    """Search a name with the wildcard patterns, as one combined pattern would."""

    def __init__(self, patterns: list[str]) -> None:
        self._patterns = [re.compile(p) for p in patterns]
        self.prefilter = PatternSet("wildcards", patterns, 0)

    def search(self, name: str) -> tuple[int, re.Match[str]] | None:
        """(pattern number, match) of the leftmost match, the earliest pattern on ties; or None."""
        best: tuple[int, re.Match[str]] | None = None
        for i in self.prefilter.candidates(name):
            m = self._patterns[i].search(name)
            if m is not None and (best is None or m.start() < best[1].start()):
                best = (i, m)
        return best
