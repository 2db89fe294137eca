"""Wildcard domain trails (regexes such as `byethost[0-9]+\\.com`) searched without running them all.

Python's `re` tries every alternative of a combined pattern at every position of a name (about
35 µs per name for Maltrail's 27 wildcards), and even one search per pattern costs more than the
rest of a name's checks. The Hyperscan prefilter names the few patterns that may match; only
those are searched, and the result is the one the combined pattern would give: the leftmost
match, the earliest pattern at that position.
"""

from __future__ import annotations

import re

from workers.heuristics.prefilter import LazyPattern, PatternSet


class WildcardMatcher:
    """Search a name with the wildcard patterns, as one combined pattern would."""

    def __init__(self, patterns: list[str]) -> None:
        self._patterns = [LazyPattern(p) for p in patterns]  # compiled when the prefilter names them
        self.prefilter = PatternSet("wildcards", patterns, 0, lines=True)

    def search(self, name: str) -> tuple[int, re.Match[str]] | None:
        """(pattern number, match) of the leftmost match, the earliest pattern on ties; or None."""
        return self._best(name, self.prefilter.candidates(name))

    def search_many(self, names: list[str], joined: str | None = None) -> dict[int, tuple[int, re.Match[str]]]:
        """`search` of each one-line name, the prefilter in one scan for all: {position: result}
        for the names that match (nearly none: a caller walks the hits, not every name). `joined`:
        the names joined by line feeds, when the caller has them so (no joins to make)."""
        candidates = self.prefilter.candidates_many(names, joined)
        if not any(candidates):  # the usual batch: no name has a candidate, and `any` says so in C
            return {}
        found = {i: self._best(names[i], c) for i, c in enumerate(candidates) if c}
        return {i: hit for i, hit in found.items() if hit is not None}

    def _best(self, name: str, candidates: list[int]) -> tuple[int, re.Match[str]] | None:
        best: tuple[int, re.Match[str]] | None = None
        for i in candidates:
            m = self._patterns[i].search(name)
            if m is not None and (best is None or m.start() < best[1].start()):
                best = (i, m)
        return best
