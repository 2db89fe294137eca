"""Which of many regular expressions can match a text, in one Hyperscan pass.

The heuristics run batteries of Python regexes (the attack categories, 1,300 suspicious
User-Agents) over every new request, and nearly every request matches none of them: one search
per pattern cost 70-80 µs a request. Hyperscan compiles the whole battery into one automaton
that answers "which patterns may match" in about a microsecond; only those few are then run with
Python's `re`, which stays the judge of what matches, where and in which order.

The database is compiled in prefilter mode (a pattern that matches is always reported; a report
may be a false alarm) and in UTF-8 with Unicode properties, so `\\w`, `\\b`, `\\d` and `\\s` cover
at least what they cover in a `str` pattern. Python's IGNORECASE also folds four non-ASCII
letters onto ASCII ones and its `\\s` takes the ASCII separators 0x1C-0x1F: the scanned copy of
a text has those replaced, so the prefilter never misses what `re` would find.

Each pattern's top-level alternatives are separate expressions, widened (bounded repeats made
unbounded, possessive ones greedy: they then match more, never less): in UTF-8 with Unicode
classes, a bounded repeat made some automata too large to build, and the rest take seconds. An
expression Hyperscan still refuses makes its pattern a candidate for every text, and so does a
pattern that PCRE (Hyperscan's syntax) would read otherwise than Python: one with a POSIX class
name or a non-ASCII character (whose case folding may differ).

Compiling takes about a second, so the database is cached on disk by content (Hyperscan refuses
a database made for another version or CPU, which is then compiled again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import tempfile
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate
from pathlib import Path

import hyperscan

log = logging.getLogger(__name__)

_BASE_FLAGS = hyperscan.HS_FLAG_PREFILTER | hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_ALLOWEMPTY \
    | hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_UCP
# What `re` with IGNORECASE and Unicode matching treats as ASCII letters or blanks, and Hyperscan does not.
_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k",
                       "\x1c": " ", "\x1d": " ", "\x1e": " ", "\x1f": " "})
_NEEDS_FOLD = re.compile("[\u0130\u0131\u017f\u212a\x1c-\x1f]")
_FOLD_ASCII = bytes.maketrans(b"\x1c\x1d\x1e\x1f", b"    ")  # the same for ASCII text, as bytes: no search
_BOUNDED = re.compile(r"(?<!\\)\{(\d*),\d+\}")
_PCRE_READS_OTHERWISE = re.compile(r"\[:\^?[a-z]+:\]|[^\x00-\x7f]")
_ESCAPE = re.compile(r"\\(.)", re.S)
_GLOBAL_FLAGS = re.compile(r"\(\?[aiLmsux]+\)")
_POSSESSIVE = re.compile(r"(?<!\\)([+*}?])\+")


def _scanned(text: str) -> bytes | None:
    """The UTF-8 bytes Hyperscan scans for a text, folded (`_FOLD`); None for a lone surrogate.
    ASCII text (the usual) is folded as bytes: searching it for what to fold cost more than the scan."""
    if text.isascii():
        raw = text.encode("ascii")
        if b"\x1c" in raw or b"\x1d" in raw or b"\x1e" in raw or b"\x1f" in raw:  # 4 memchr: less than translating
            return raw.translate(_FOLD_ASCII)
        return raw
    if _NEEDS_FOLD.search(text):
        text = text.translate(_FOLD)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return None


def cache_dir() -> Path:
    """`MALTRAIL_CACHE_DIR`, else systemd's `CACHE_DIRECTORY` (a unit's `CacheDirectory=`), else the
    XDG cache directory's `maltrail`."""
    explicit = os.environ.get("MALTRAIL_CACHE_DIR") or os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "maltrail"


def _hs_flags(flags: int) -> int:
    if flags & ~(re.IGNORECASE | re.DOTALL | re.MULTILINE | re.ASCII | re.UNICODE):
        raise ValueError(f"prefilter: unsupported re flags {re.RegexFlag(flags)!r}")
    out = _BASE_FLAGS
    if flags & re.IGNORECASE:
        out |= hyperscan.HS_FLAG_CASELESS
    if flags & re.DOTALL:
        out |= hyperscan.HS_FLAG_DOTALL
    if flags & re.MULTILINE:
        out |= hyperscan.HS_FLAG_MULTILINE
    return out


class LazyPattern:
    """A regex compiled on its first search: the patterns of a battery are searched only in the rare
    text their prefilter names, and compiling them all cost every sensor start (and every worker
    of it) about 10 ms for the attack categories, 7 ms for the wildcard trails."""

    __slots__ = ("pattern", "flags", "_compiled")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self.pattern, self.flags = pattern, flags
        self._compiled: re.Pattern[str] | None = None

    def search(self, text: str) -> re.Match[str] | None:
        if self._compiled is None:
            self._compiled = re.compile(self.pattern, self.flags)
        return self._compiled.search(text)


class PatternSet:
    """A prefilter over `patterns` (Python regex sources, all with the `re` flags `flags`).
    `candidates(text)` lists, in pattern order, the indices of the patterns that may match
    somewhere in `text`: a superset of those whose `re.search` succeeds.

    With `lines`, `candidates_many(texts)` answers for many one-line texts (DNS names) in one scan
    of the texts joined by newlines: the database then reports every match end, not one per
    pattern, and `^`/`$` match at line ends, as do `\\A` and `\\Z` (compiled as `^` and `$`: a
    text's ends are line ends there). A match that crosses a newline only adds a candidate, and a flood of reports
    (a pattern the prefilter had to widen to almost anything) falls back to one scan per text."""

    def __init__(self, name: str, patterns: Sequence[str], flags: int, lines: bool = False) -> None:
        self.name = name
        self._patterns = list(patterns)
        self._flags = _hs_flags(flags)
        if lines:
            self._flags = self._flags & ~hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_MULTILINE
        self._lines = lines
        self._ready = False
        self._db: hyperscan.Database | None = None  # None when no expression compiled at all
        self._always: list[int] = []  # patterns Hyperscan cannot take: candidates for every text
        self._hits: list[int] = []
        self._ends: list[tuple[int, int]] = []
        self._report_limit = 0
        self._on_match = self._record

    def _record(self, pattern_id: int, start: int, end: int, flags: int, context: object) -> None:
        self._hits.append(pattern_id)

    def _record_end(self, pattern_id: int, start: int, end: int, flags: int, context: object) -> bool:
        self._ends.append((pattern_id, end))
        return len(self._ends) > self._report_limit  # True stops the scan

    def prepare(self) -> None:
        """Load or compile the database now (the fork server does, so workers inherit it)."""
        if not self._ready:
            if not self._load():
                self._build()
            self._ready = True

    def candidates(self, text: str) -> list[int]:
        if not self._ready:
            self.prepare()
        raw = _scanned(text)
        if raw is None:  # a lone surrogate: no valid UTF-8 to scan, so every pattern is a candidate
            return list(range(len(self._patterns)))
        self._hits = hits = list(self._always)
        if self._db is not None:
            self._db.scan(raw, match_event_handler=self._on_match)
        if len(hits) > 1:
            hits = sorted(set(hits)) if self._lines else sorted(hits)
        return hits

    def candidates_many(self, texts: list[str], joined: str | None = None) -> list[list[int]]:
        """`candidates` of each one-line text, from one scan (`lines` sets only). The lists may be
        shared between texts: read them, do not change them. `joined`: the texts joined by line
        feeds, when the caller has them so and knows that no text holds one."""
        if not self._ready:
            self.prepare()
        if self._db is None or not texts:
            return [list(self._always) for _ in texts]
        if joined is None:
            if "\n" in "".join(texts):  # a text of several lines (a search costs a tenth of counting them)
                return [self.candidates(t) for t in texts]
            joined = "\n".join(texts)
        raw = _scanned(joined)
        if raw is None:
            return [self.candidates(t) for t in texts]
        self._ends, self._report_limit = [], 8 * len(texts) + 64
        try:
            self._db.scan(raw, match_event_handler=self._record_end)
        except hyperscan.ScanTerminated:
            return [self.candidates(t) for t in texts]
        out = [self._always] * len(texts)
        if not self._ends:  # the usual case: the line offsets are not needed (they cost more than the scan)
            return out
        lines = texts if len(raw) == len(joined) else raw.split(b"\n")
        starts = list(accumulate((len(line) + 1 for line in lines), initial=0))  # byte offsets
        for pattern_id, end in self._ends:
            i = bisect_right(starts, end) - 1
            if pattern_id not in out[i]:
                out[i] = sorted((*out[i], pattern_id))
        return out

    # ---- building --------------------------------------------------------------------------
    def _key(self) -> str:
        digest = hashlib.sha256(f"{hyperscan.__version__}\0{self._flags}\0{self._lines and 'line-anchors'}\0".encode())
        for pattern in self._patterns:
            digest.update(pattern.encode("utf-8", "surrogatepass") + b"\0")
        return digest.hexdigest()[:32]

    def _cache_file(self) -> Path:
        return cache_dir() / f"hs-{self.name}-{self._key()}.db"

    def _load(self) -> bool:
        """The cached database (its first line lists the always-candidates); False if unusable."""
        try:
            always, _, blob = self._cache_file().read_bytes().partition(b"\n")
            self._always = [int(i) for i in always.split(b",") if i]
            self._db = hyperscan.loadb(blob, hyperscan.HS_MODE_BLOCK) if blob else None
            if self._db is not None:
                self._db.scratch = hyperscan.Scratch(self._db)
        except (OSError, ValueError, hyperscan.HyperscanError):
            self._always, self._db = [], None
            return False
        return True

    def _build(self) -> None:
        odd = {i for i, pattern in enumerate(self._patterns) if _PCRE_READS_OTHERWISE.search(pattern)}
        members = [(i, _widened(_line_anchored(m) if self._lines else m)) for i, pattern in enumerate(self._patterns)
                   if i not in odd for m in _alternatives(pattern)]
        self._always = sorted(odd)
        try:
            db = _compile(members, self._flags)
        except hyperscan.HyperscanError:  # find the expressions it refuses, one at a time
            self._always = sorted(odd | {i for i, m in members if not _compiles(m, self._flags)})
            db = _compile([(i, m) for i, m in members if i not in self._always], self._flags)
        self._db = db
        blob = hyperscan.dumpb(db) if db is not None else b""
        self._store(",".join(map(str, self._always)).encode() + b"\n" + blob)

    def _store(self, raw: bytes) -> None:
        _store(self._cache_file(), raw)


def _store(path: Path, raw: bytes) -> None:
    """Write a cache file atomically; a cache that cannot be written only costs the next start the work."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".hs-", delete=False) as f:
            f.write(raw)
        os.replace(f.name, path)
    except OSError as exc:
        if "f" in locals():
            Path(f.name).unlink(missing_ok=True)
        log.debug("pattern cache %s not written: %s", path, exc)


def cached_lines(name: str, source: str, compute: Callable[[str], list[str]]) -> list[str]:
    """`compute(source)`, kept in the cache directory under a digest of the source and the Python
    version (what `re` accepts can change with it): for derived pattern lists whose making costs
    a start more than reading them back."""
    digest = hashlib.sha256(f"{sys.version_info[:2]}\0{source}".encode("utf-8", "surrogatepass")).hexdigest()[:32]
    path = cache_dir() / f"lines-{name}-{digest}.json"
    try:
        lines = json.loads(path.read_bytes())
        if isinstance(lines, list) and all(isinstance(line, str) for line in lines):
            return lines
    except (OSError, ValueError):
        pass
    lines = compute(source)
    _store(path, json.dumps(lines).encode())
    return lines


def _alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of a regex (`a|b(c|d)` gives `a`, `b(c|d)`); a pattern with
    inline flags, which apply to all of it, stays whole."""
    if _GLOBAL_FLAGS.search(pattern):
        return [pattern]
    out: list[str] = []
    depth, start, i, in_class = 0, 0, 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            i += 1 + (pattern[i + 1 : i + 2] == "^")
            i += pattern[i : i + 1] == "]"  # a `]` first in a class is a literal
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            out.append(pattern[start:i])
            start = i + 1
        i += 1
    out.append(pattern[start:])
    return out


def _line_anchored(expression: str) -> str:
    """The text anchors `\\A` and `\\Z` as line anchors, which a joined scan of one-line texts
    has at every text's ends (and nowhere a text's own anchors would not match)."""
    return _ESCAPE.sub(lambda m: {"A": "^", "Z": "$"}.get(m.group(1), m.group(0)), expression)


def _compile(members: list[tuple[int, str]], flags: int) -> hyperscan.Database | None:
    if not members:
        return None
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[m.encode("utf-8") for _, m in members], ids=[i for i, _ in members],
               elements=len(members), flags=[flags] * len(members))
    return db


def _widened(expression: str) -> str:
    return _POSSESSIVE.sub(r"\1", _BOUNDED.sub(lambda m: f"{{{m.group(1) or 0},}}", expression))


def _compiles(expression: str, flags: int) -> bool:
    try:
        _compile([(0, expression)], flags)
    except hyperscan.HyperscanError:
        return False
    return True
