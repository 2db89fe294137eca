"""Wildcard domain trails (regexes such as `byethost[0-9]+\\.com`) searched without running them all.

Python's `re` tries every alternative of a combined pattern at every position of a name, which
costs about 35 µs per name for Maltrail's 27 wildcards. Almost every pattern needs some literal
text in any match (`byethost`, `.eurodir.ru`, one of `atztds|mtxtds`), found here from the
pattern's parse tree; a name is searched only with the patterns whose literals it contains, and
the result is the one the combined pattern would give: the leftmost match, the earliest pattern
at that position.
"""

from __future__ import annotations

import re
from re import _parser
from re._constants import BRANCH, LITERAL, SUBPATTERN

_MIN_LITERAL = 2  # shorter literals (a lone `.`) do not narrow anything down


def _runs(sequence: list) -> list[str]:
    """Runs of consecutive literal characters at the top level of a parsed sequence."""
    out: list[str] = []
    run: list[str] = []
    for op, av in sequence:
        if op is LITERAL:
            run.append(chr(av))
            continue
        if run:
            out.append("".join(run))
            run = []
    if run:
        out.append("".join(run))
    return out


def _group_literals(sequence: list) -> tuple[str, ...] | None:
    """For a group: one required literal per alternative (its longest run), or None."""
    branches = sequence[0][1][1] if len(sequence) == 1 and sequence[0][0] is BRANCH else [sequence]
    out = []
    for branch in branches:
        runs = _runs(list(branch))
        if not runs:
            return None
        out.append(max(runs, key=len))
    return tuple(out)


def required_literals(pattern: str) -> tuple[str, ...] | None:
    """Strings of which every match of the pattern contains at least one; None when the parse tree
    does not tell (a top-level alternation, case-insensitive flags, nothing literal)."""
    try:
        tree = _parser.parse(pattern)
    except (re.error, RecursionError):
        return None
    if tree.state.flags & (re.IGNORECASE | re.VERBOSE):
        return None
    items = list(tree)
    candidates: list[tuple[str, ...]] = [(run,) for run in _runs(items)]
    for op, av in items:
        if op is SUBPATTERN and not av[1] and not av[2]:  # a group without inline flags
            literals = _group_literals(list(av[3]))
            if literals:
                candidates.append(literals)
    candidates = [c for c in candidates if min(map(len, c)) >= _MIN_LITERAL]
    if not candidates:
        return None
    # Few alternatives are cheap to test; among those, longer literals reject more names.
    return min(candidates, key=lambda c: (len(c) if min(map(len, c)) >= 3 else len(c) + 100, -min(map(len, c))))


class WildcardMatcher:
    """Search a name with the wildcard patterns, as one combined pattern would."""

    def __init__(self, patterns: list[str]) -> None:
        self._patterns = [re.compile(p) for p in patterns]
        self._literals = [required_literals(p) for p in patterns]

    def search(self, name: str) -> tuple[int, re.Match[str]] | None:
        """(pattern number, match) of the leftmost match, the earliest pattern on ties; or None."""
        best: tuple[int, re.Match[str]] | None = None
        for i, literals in enumerate(self._literals):
            if literals is not None:
                for literal in literals:
                    if literal in name:
                        break
                else:
                    continue
            m = self._patterns[i].search(name)
            if m is not None and (best is None or m.start() < best[1].start()):
                best = (i, m)
        return best
