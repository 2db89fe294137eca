"""Reading Maltrail trail sources into one trail set (spec sections 1.1-1.5).

A trail set is an insertion-ordered ``dict`` mapping a normalised, lower-cased key to
``(info, reference)``. Sources:

* static trail folders laid out like Maltrail's ``trails/static`` (``*.txt`` one trail per line,
  ``*.csv`` ``value,info`` lines),
* custom trail folders (``CUSTOM_TRAILS_DIR``: ``*.txt``, reference ``(custom)``),
* ``trails.csv`` files (the runtime store, ``trail,info,reference``).

``load_sources`` reproduces Maltrail's updater (``core/update.py:update_trails``): line
normalisation, merging in order with the priority rule, post-processing, then dropping whitelisted
and local keys; the result equals what Maltrail would write to ``trails.csv``, key order included.
``trails.csv`` rows take the same path as a feed would (a Maltrail-built file passes essentially
unchanged). The ``read_*`` functions return one source as merged on its own, before
post-processing.

Fetched sources (feeds, ``CUSTOM_TRAILS_URL`` lists) are passed in as ready ``Trails`` dicts
(``engine.update`` fetches and parses them); ``MergeRules`` carries the updater's options that only
matter with them: ``IP_MINIMUM_FEEDS`` (IPv4 trails seen in too few feeds are dropped; static and
custom ones are exempt, rows of a ``trails.csv`` are taken as already filtered by default) and
``DISABLED_TRAILS_INFO_REGEX``. The bogon/CDN filter on leading IPv4 addresses, Maltrail's last
step, is ``engine.update.sanity``'s.

Key extensions of this project, kept as written except for strip and lower-casing: ``ua:<agent>``
(exact User-Agent trails: never cut at ``#``, ``?`` or ``://``, never IDNA-encoded) and address
keys (``1.2.3.4:80``, ``dead::beef``, ``[dead::beef]:443``, ``5.63.151.0/24``,
``2001:db8::/32``), which Maltrail's normalisation already leaves untouched.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import is_not, itemgetter, not_
from pathlib import Path

import numpy as np

from engine.index.schema import UA_PREFIX
from engine.trails.whitelist import Whitelist

Trails = dict[str, tuple[str, str]]

LOW_PRIORITY_INFO_KEYWORDS = (
    "reputation",
    "attacker",
    "spammer",
    "abuser",
    "malicious",
    "dnspod",
    "nicru",
    "crawler",
    "compromised",
    "bad history",
)
HIGH_PRIORITY_INFO_KEYWORDS = ("mass scanner", "ipinfo")
HIGH_PRIORITY_REFERENCES = ("(static)", "(custom)")
BAD_TRAIL_PREFIXES = ("127.", "192.168.", "localhost")
STATIC_REFERENCE = "(static)"
CUSTOM_REFERENCE = "(custom)"
CUSTOM_SPEC_PREFIX = "custom:"
MAX_WILDCARD_TRAILS = 100
CSV_FIELDS = 3

_IPV4_KEY = re.compile(r"\d+\.\d+\.\d+\.\d+")
_ALPHA_KEY = re.compile(r"\.?[a-z]+", re.IGNORECASE)
_WILDCARD_HINT = re.compile(r"[\].][*+]|\[[a-z0-9_.\-]+\]", re.IGNORECASE)
_REVIEW_PREFIXES = ("www.", ".", *BAD_TRAIL_PREFIXES)
_REVIEW_FIRST_CHARS = "0123456789w.l"
_QUAD_CHARS = "0123456789."
_UA_PREFIXES = (UA_PREFIX, UA_PREFIX.upper(), "Ua:", "uA:")
_DROP_FIRST_CHARS = "0123456789l"  # first characters of dotted quads and of BAD_TRAIL_PREFIXES
_FIRST_CHAR = itemgetter(slice(1))


class TrailSourceError(Exception):
    """A trail source that cannot be used; the message is one line naming the path and the problem."""


def _read_text(path: Path) -> str:
    """Whole file as UTF-8 text, without a byte-order mark (Maltrail fails on anything but UTF-8)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TrailSourceError(f"trail source {path}: not found") from None
    except OSError as exc:
        raise TrailSourceError(f"trail source {path}: unreadable ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TrailSourceError(f"trail source {path}: unreadable (not UTF-8 at byte {exc.start})") from None


def _value(info: str, reference: str) -> tuple[str, str]:
    """An ``(info, reference)`` pair; bare ``ransomware`` gets Maltrail's ``(malware)`` class.

    Maltrail renames it in post-processing; doing it here is equivalent because no merge or
    post-processing rule looks at that info text.
    """
    return ("ransomware (malware)" if info == "ransomware" else info, reference)


class _Values(dict[tuple[str, str], tuple[str, str]]):
    """``_value`` of each ``(info, reference)`` pair, computed once: rows share the tuple."""

    def __missing__(self, pair: tuple[str, str]) -> tuple[str, str]:
        value = self[pair] = _value(*pair)
        return value


def _needs_review(key: str) -> bool:
    """Cheap superset test: could post-processing or the final filter change or drop this key?

    True for upper-case or non-ASCII keys, keys without a dot (alphabetic, empty), query strings,
    doubled slashes, all-digit-and-dot keys (dotted quads) and keys starting with ``www.``, ``.``,
    ``127.``, ``192.168.`` or ``localhost``. ``_parse_trail_lines`` inlines it for speed.
    """
    return (
        key != key.lower()
        or "." not in key
        or "?" in key
        or "//" in key
        or not key.isascii()
        or (
            key[0] in _REVIEW_FIRST_CHARS and (not key.strip(_QUAD_CHARS) or key.startswith(_REVIEW_PREFIXES))
        )
    )


def _review_mask(keys: Sequence[str]) -> np.ndarray:
    """``_needs_review`` of every key at once, as numpy operations over the keys' bytes.

    The keys are joined with a newline (no test looks for one, so nothing matches across two keys)
    and the byte tests are OR-ed per key in one reduction; non-ASCII keys always need review and
    stand in as ``A``.
    """
    n = len(keys)
    if not n:
        return np.zeros(0, dtype=bool)
    joined = "\n".join(keys)
    if not joined.isascii():
        keys = [key if key.isascii() else "A" for key in keys]
        joined = "\n".join(keys)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, keys), dtype=np.int64, count=n - 1) + 1, out=starts[1:])
    padded = np.frombuffer((joined + "\n" + "\0" * 9).encode("ascii"), dtype=np.uint8)
    data = padded[: len(joined) + 1]  # every key with its newline: no reduction segment is empty
    slashes = data == ord("/")
    not_quad = ((data < ord("0")) | (data > ord("9"))) & (data != ord("."))
    not_quad[starts[1:] - 1] = False  # the newlines
    not_quad[-1] = False
    bits = (((data - ord("A")) < 26) | (data >= 0x80)).view(np.uint8)  # 1: upper case or (stand-in) non-ASCII
    bits |= (data == ord(".")).view(np.uint8) << 1  # 2: a dot
    bits |= (data == ord("?")).view(np.uint8) << 2  # 4: a question mark
    bits[:-1] |= (slashes[:-1] & slashes[1:]).view(np.uint8) << 3  # 8: a doubled slash
    bits |= not_quad.view(np.uint8) << 4  # 16: not a dotted-quad character
    found = np.bitwise_or.reduceat(bits, starts)
    review = (found & 13 != 0) | (found & 2 == 0)
    first = padded[starts]
    maybe = np.flatnonzero(~review & np.isin(first, np.frombuffer(_REVIEW_FIRST_CHARS.encode(), dtype=np.uint8)))
    prefixed = found[maybe] & 16 == 0
    for prefix in _REVIEW_PREFIXES:
        hit = np.ones(len(maybe), dtype=bool)
        for offset, char in enumerate(prefix.encode()):
            hit &= padded[starts[maybe] + offset] == char
        prefixed |= hit
    review[maybe[prefixed]] = True
    return review


# Stands for "only listed as www.<key> so far" while a source is read; never leaves _Source.
_WWW_ONLY: tuple[str, str] = ("", "")


@dataclass
class _Source:
    """One source's trails plus what merging needs to know without rescanning 1.6 M keys.

    Maltrail merges ``www.<key>`` (without ``/``) into ``<key>``, the form listed first being the
    existing value and the other the newcomer of the priority rule. Readers collapse the two forms
    as they go, keeping the bare key at the position of whichever form came first, and remember
    the ``www.`` form's last value so either merge can replay the two in Maltrail's order.
    """

    trails: Trails = field(default_factory=dict)
    # keys passing _needs_review, in first-occurrence order (repeats possible)
    review: list[str] = field(default_factory=list)
    # bare key -> last value listed as www.<bare key>
    www_values: dict[str, tuple[str, str]] = field(default_factory=dict)
    # bare keys whose www. form was listed before the bare form
    www_first: set[str] = field(default_factory=set)

    @classmethod
    def from_rows(cls, keys: list[str], values: list[tuple[str, str]], review: bool = True,
                  www: list[int] | None = None) -> _Source:
        """The source ``add`` makes of these rows, built with whole-list operations.

        ``www.`` rows are renamed to their bare key first, so one ``dict`` build puts every key at
        the position of its first form; a second pass restores the last bare value where both forms
        were listed. ``review=False`` leaves ``review`` empty (for a set that is not post-processed);
        ``www`` lists the rows whose key starts with ``www.`` when the caller knows them already.
        Rows with a ``www.www.`` key, whose bare key is itself a ``www.`` key, take ``add``.
        """
        source = cls()
        n = len(keys)
        if www is None:
            www = np.flatnonzero(np.fromiter(map(str.startswith, keys, repeat("www.")), dtype=bool, count=n)).tolist()
        www = [i for i in www if "/" not in keys[i]]
        bare = [keys[i][4:] for i in www]
        if any(map(str.startswith, bare, repeat("www."))):
            source.add(keys, values)
            if not review:
                source.review.clear()
            return source
        if not www:
            source.trails = dict(zip(keys, values, strict=True))
        else:
            plain = np.ones(n, dtype=bool)
            plain[www] = False
            listed = keys
            keys, renamed = list(keys), list(values)
            for i, key in zip(www, bare, strict=True):
                keys[i] = key
                renamed[i] = _WWW_ONLY
            source.trails = dict(zip(keys, renamed, strict=True))
            source.www_values = dict(zip(bare, map(values.__getitem__, www), strict=True))
            first_www = dict(zip(reversed(bare), reversed(www), strict=True))
            # plain rows of a key also listed as www.<key> (only if some key is listed twice): the last
            # one's value is the bare value
            both: list[int] = []
            if len(source.trails) < n:
                listed_www = np.fromiter(map(first_www.__contains__, keys), dtype=bool, count=n)
                both = np.flatnonzero(listed_www & plain).tolist()
            source.trails.update((listed[i], values[i]) for i in both)
            first_bare = {keys[i]: i for i in reversed(both)}
            if first_bare:
                source.www_first = {key for key, i in first_www.items() if first_bare.get(key, n) > i}
            else:
                source.www_first = set(first_www)
        if review:
            source.review = list(compress(keys, _review_mask(keys).tolist()))
        return source

    def add(self, keys: list[str], values: list[tuple[str, str]]) -> None:
        """Store rows in order, later ones overwriting earlier ones (the reference for ``from_rows``)."""
        trails = self.trails
        for key, value in zip(keys, values, strict=True):
            trails[key] = value
            if _needs_review(key):
                self.note(key)

    def note(self, key: str) -> None:
        """Take care of a key that was just stored and passed ``_needs_review``."""
        if key.startswith("www.") and "/" not in key:
            value = self.trails[key]
            if key in self.www_values:
                # also the bare form of www.www.<x>, which only ever holds the placeholder
                self.trails[key] = _WWW_ONLY
            else:
                del self.trails[key]
            key = key[4:]
            if key not in self.trails:
                self.trails[key] = _WWW_ONLY
                self.www_first.add(key)
            self.www_values[key] = value
            if not _needs_review(key):
                return
        self.review.append(key)

    def forms(self, key: str, value: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        """The values listed for ``key`` (stored ``value``) in the order Maltrail merges them."""
        www_value = self.www_values.get(key)
        if www_value is None:
            return (value,)
        if value is _WWW_ONLY:
            return (www_value,)
        return (www_value, value) if key in self.www_first else (value, www_value)

    def settle(self, duplicates: dict[str, set[str]]) -> Trails:
        """Finish the source as if merged into an empty set; returns its trails."""
        trails = self.trails
        # keys listed only as www.<key> take that value; the others merge their two forms
        both = list(compress(self.www_values, map(is_not, map(trails.__getitem__, self.www_values), repeat(_WWW_ONLY))))
        bare_values = list(map(trails.__getitem__, both))
        trails.update(self.www_values)
        for key, value in zip(both, bare_values, strict=True):
            first, *later = self.forms(key, value)
            trails[key] = first
            for form in later:
                _merge_item(trails, duplicates, key, form)
        return trails


def _special_line_key(line: str, static_txt: bool) -> str:
    """Key of a stripped line containing ``#``, ``/`` or ``:`` (comment, URL, ``ua:`` or address)."""
    if line.startswith(_UA_PREFIXES):
        return line
    if "#" in line:  # Maltrail: re.sub(r"\s*#.*", "", line)
        line = line[: line.index("#")].rstrip()
    if "://" in line:
        line = line.split("://", 1)[1]
        if static_txt and "/" not in line:
            line += "/"  # http://x.com is the host trail x.com/
    if not static_txt:
        line = line.rstrip("/")
    if "/" in line:
        return line.rstrip("/") if static_txt and line.count("/") > 1 else line
    return line.strip(".")  # a dotted quad is kept as is, which strip('.') leaves unchanged anyway


def _parse_trail_lines(text: str, value: tuple[str, str], source: _Source, static_txt: bool) -> None:
    """Normalise the lines of a static ``.txt`` (``static_txt``) or custom trail file into ``source``.

    Later lines overwrite earlier ones and keep the first position (one source is a plain dict in
    Maltrail; the priority rule only applies between sources). This loop runs for 1.8 M lines, so
    the common line (a plain domain or IP) takes the short branch.
    """
    trails = source.trails
    note = source.note
    first_chars, prefixes, quad_chars = _REVIEW_FIRST_CHARS, _REVIEW_PREFIXES, _QUAD_CHARS
    # tests the whole text can answer for every line (lower-casing only depends on the context for Σ,
    # which never survives it)
    ascii_text = text.isascii()
    cased = text != text.lower()
    query = "?" in text
    for line in map(str.strip, text.split("\n")):
        if not line or line[0] == "#":
            continue
        if "#" in line or "/" in line:
            key = _special_line_key(line, static_txt)
            trails[key] = value
            if _needs_review(key):
                note(key)
            continue
        if ":" in line and line.startswith(_UA_PREFIXES):
            key = line
        else:
            key = line.strip(".")
        trails[key] = value
        # _needs_review for a key without "/"
        if (
            (cased and key != key.lower())
            or "." not in key
            or (query and "?" in key)
            or not (ascii_text or key.isascii())
            or (key[0] in first_chars and (not key.strip(quad_chars) or key.startswith(prefixes)))
        ):
            note(key)


def _parse_static_csv(text: str, category: str | None, reference: str, source: _Source) -> None:
    """A static ``value,info`` file: reference ``<stem> (static)``, no inline comments."""
    values: dict[str, tuple[str, str]] = {}
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line[0] == "#" or "," not in line:
            continue
        key, info = line.split(",", 1)
        info = info.strip('"')
        if category:
            info = f"{info} ({category})"
        value = values.get(info)
        if value is None:
            value = values[info] = _value(info, reference)
        if not key.startswith(_UA_PREFIXES):
            if "://" in key:
                key = key.split("://", 1)[1]
            key = key.rstrip("/")
            if "/" not in key:
                key = key.strip(".")
        source.trails[key] = value
        if _needs_review(key):
            source.note(key)


def _directory_rank(name: str) -> int:
    """Static sub-directory order: suspicious/malicious first, then the root and others, then custom."""
    if "suspicious" in name or "malicious" in name:
        return -1
    return 1 if "custom" in name else 0


def _listing(directory: Path) -> list[os.DirEntry[str]]:
    """Non-hidden entries of a directory sorted by name (what Maltrail's glob yields, in sorted order)."""
    try:
        with os.scandir(directory) as entries:
            visible = [entry for entry in entries if not entry.name.startswith(".")]
    except FileNotFoundError:
        raise TrailSourceError(f"trail source {directory}: not found") from None
    except OSError as exc:
        raise TrailSourceError(f"trail source {directory}: unreadable ({exc.strerror or exc})") from None
    return sorted(visible, key=lambda entry: entry.name)


def _files(entries: list[os.DirEntry[str]], suffix: str) -> list[Path]:
    """The regular files among ``entries`` whose name ends with ``suffix``."""
    return [Path(entry.path) for entry in entries if entry.name.endswith(suffix) and entry.is_file()]


def _static_order(names: list[str]) -> list[tuple[str, str | None]]:
    """Trail files of a static tree (relative ``/`` paths) in Maltrail's reading order, each with
    its category (sub-directory) or None: the root and its first-level sub-directories,
    suspicious/malicious ones first, then the root and the others, then any with ``custom`` in the
    name (by name within each group); in each, ``*.csv`` files and then ``*.txt`` files by name,
    files with ``history`` in the name last."""
    folders: dict[str | None, list[str]] = {None: []}
    for name in sorted(names):
        parts = name.split("/")
        if len(parts) <= 2 and not any(part.startswith(".") for part in parts):
            folders.setdefault(parts[0] if len(parts) == 2 else None, []).append(parts[-1])
    order = sorted(folders, key=lambda folder: 0 if folder is None else _directory_rank(folder))
    plan: list[tuple[str, str | None]] = []
    for folder in order:
        files = folders[folder]
        prefix = "" if folder is None else f"{folder}/"
        txt = sorted((f for f in files if f.endswith(".txt")), key=lambda f: "history" in f)
        plan += [(prefix + f, folder) for f in files if f.endswith(".csv")] + [(prefix + f, folder) for f in txt]
    return plan


def _read_static_files(names: list[str], read: Callable[[str], str], where: str) -> _Source:
    """A static tree's trails, its files read through ``read(relative path)``."""
    source = _Source()
    for name, category in _static_order(names):
        stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if name.endswith(".csv"):
            _parse_static_csv(read(name), category, f"{stem} {STATIC_REFERENCE}", source)
            continue
        info = stem.replace("_", " ")
        if category:
            info = f"{info} ({category})"
        _parse_trail_lines(read(name), _value(info, STATIC_REFERENCE), source, static_txt=True)
    if not source.trails:
        raise TrailSourceError(f"trail source {where}: empty (no trail rows)")
    return source


def _read_static_dir(path: str | Path) -> _Source:
    """Static folder reader behind ``read_static_dir``."""
    root = Path(path)
    if not root.is_dir():
        raise TrailSourceError(f"trail source {root}: not a directory")
    root_entries = _listing(root)
    names = [entry.name for entry in root_entries if entry.is_file()]
    for entry in root_entries:
        if entry.is_dir():
            names += [f"{entry.name}/{sub.name}" for sub in _listing(Path(entry.path)) if sub.is_file()]
    return _read_static_files(names, lambda name: _read_text(root / name), str(root))


def read_static_texts(files: dict[str, bytes], where: str) -> SourceRows:
    """Static trails held in memory (an archive's ``trails/static`` members by relative path),
    read like a static folder; ``where`` names them in errors."""
    def read(name: str) -> str:
        try:
            return files[name].decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise TrailSourceError(f"trail source {where}/{name}: unreadable (not UTF-8 at byte {exc.start})"
                                   ) from None

    return _read_static_files(list(files), read, where)


def read_static_dir(path: str | Path) -> Trails:
    """One static trail folder as Maltrail's static source, merged on its own (``www.`` folded in).

    Read are the root and its first-level sub-directories, suspicious/malicious ones first, then
    the root and the others, then any with ``custom`` in the name (by name within each group); in
    each, ``*.csv`` files and then ``*.txt`` files by name, files with ``history`` in the name last.
    A sub-directory's name becomes the category suffix of the info text.
    """
    return _read_static_dir(path).settle({})


def _read_custom_dir(path: str | Path) -> _Source:
    """Custom folder reader behind ``read_custom_dir``."""
    directory = Path(path)
    if not directory.is_dir():
        raise TrailSourceError(f"trail source {directory}: not a directory")
    source = _Source()
    for txt_path in _files(_listing(directory), ".txt"):
        value = _value(txt_path.stem.replace("_", " "), CUSTOM_REFERENCE)
        _parse_trail_lines(_read_text(txt_path), value, source, static_txt=False)
    return source  # an empty custom folder is allowed, as in Maltrail


def read_custom_dir(path: str | Path) -> Trails:
    """A custom trail folder (``*.txt`` by name, merged on its own): info is the stem, ``(custom)``.

    An empty folder gives no trails (Maltrail allows it); a missing one is an error."""
    return _read_custom_dir(path).settle({})


def _csv_rows(text: str) -> tuple[list[str], list[tuple[str, str]], list[int]] | None:
    """Keys and values (``_value``) of the rows of exactly three fields of a text without
    quotes or carriage returns, split at C speed, and the rows whose key starts with ``www.``; None
    for any other text (the csv module's rules then apply, including its field size limit).

    Lines are measured on the UTF-8 bytes (commas and newlines are never part of a longer
    character), so only the split itself makes Python strings.
    """
    if '"' in text or "\r" in text:
        return None
    body = text[:-1] if text.endswith("\n") else text
    data = np.frombuffer(body.encode(), dtype=np.uint8)
    bounds = np.concatenate([[-1], np.flatnonzero(data == ord("\n")), [len(data)]])  # around each line
    if int(np.diff(bounds).max()) - 1 > csv.field_size_limit():
        return None
    comma_at = np.flatnonzero(data == ord(","))
    commas = np.diff(np.searchsorted(comma_at, bounds))
    rows = commas == 2
    starts = bounds[:-1][rows] + 1
    padded = np.concatenate([data, np.zeros(4, dtype=np.uint8)])
    www = np.ones(len(starts), dtype=bool)
    for offset, char in enumerate(b"www."):
        www &= padded[starts + offset] == char
    if rows.all():  # the usual file: each line's first comma becomes a line break, so one split
        split = data.copy()  # gives keys and "info,reference" texts, and a pair is split once
        split[comma_at[0::2]] = ord("\n")
        parts = split.tobytes().decode().split("\n")
        pairs = {suffix: _value(*suffix.split(",")) for suffix in set(parts[1::2])}
        return parts[0::2], list(map(pairs.__getitem__, parts[1::2])), np.flatnonzero(www).tolist()
    fields = ",".join(compress(body.split("\n"), rows.tolist())).split(",") if rows.any() else []
    values = list(map(_Values().__getitem__, zip(fields[1::3], fields[2::3], strict=True)))
    return fields[0::3], values, np.flatnonzero(www).tolist()


def _read_trails_csv(path: str | Path, review: bool = True, text: str | None = None) -> _Source:
    """``trails.csv`` reader behind ``read_trails_csv``; ``review`` as for ``_Source.from_rows``;
    ``text``: the file's text when already read."""
    csv_path = Path(path)
    if text is None:
        text = _read_text(csv_path)
    split = _csv_rows(text)
    if split is not None:
        keys, values, www = split
    else:
        www = None
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=",", quotechar='"')
        try:
            rows = [row for row in reader if len(row) == CSV_FIELDS]
        except csv.Error as exc:
            problem = f"line {reader.line_num}: {exc}"
            raise TrailSourceError(f"trail source {csv_path}: unreadable ({problem})") from None
        keys = [row[0] for row in rows]
        values = list(map(_Values().__getitem__, [(row[1], row[2]) for row in rows]))
    if not keys:
        raise TrailSourceError(f"trail source {csv_path}: empty (no trail rows)")
    return _Source.from_rows(keys, values, review, www)


def read_trails_csv(path: str | Path) -> Trails:
    """A ``trails.csv`` (Python csv dialect): rows of exactly three fields; later duplicates win.

    Whitelisted rows are dropped by ``load_sources``, which also applies the rest of the pipeline.
    """
    return _read_trails_csv(path).settle({})


SourceRows = _Source  # one source read and merged on its own, ready for load_sources


def read_source(spec: str) -> SourceRows:
    """One source spec read on its own (its trails are ``.trails``), to be passed to ``load_sources``."""
    return _read_spec(spec)


def read_list_text(text: str, info: str, reference: str) -> SourceRows:
    """A remote trail list (Maltrail's ``CUSTOM_TRAILS_URL``): lines parsed like a custom file's."""
    source = _Source()
    _parse_trail_lines(text, _value(info, reference), source, static_txt=False)
    return source


def _read_spec(spec: str, review: bool = True) -> _Source:
    """A source spec: ``custom:DIR``, a directory (static folder) or a ``.csv`` file (trails.csv);
    ``review`` as for ``_Source.from_rows`` (trails.csv only)."""
    if spec.startswith(CUSTOM_SPEC_PREFIX):
        directory = spec[len(CUSTOM_SPEC_PREFIX) :]
        if not directory:
            raise TrailSourceError(f"trail source {spec}: no directory given")
        return _read_custom_dir(directory)
    path = Path(spec)
    if path.is_dir():
        return _read_static_dir(path)
    if not path.exists():
        raise TrailSourceError(f"trail source {path}: not found")
    if path.suffix.lower() == ".csv":
        return _read_trails_csv(path, review)
    raise TrailSourceError(f"trail source {path}: not a directory, custom:DIR or .csv file")


def _accepts(current: tuple[str, str], new: tuple[str, str]) -> bool:
    """Maltrail's merge priority: may ``new`` replace the ``current`` value of an existing key?"""
    info, reference = new
    low_priority = any(word in info for word in LOW_PRIORITY_INFO_KEYWORDS)
    if not (low_priority or current[1] in HIGH_PRIORITY_REFERENCES):
        return True
    if reference in HIGH_PRIORITY_REFERENCES and "history" not in info:
        return True
    return any(word in info for word in HIGH_PRIORITY_INFO_KEYWORDS)


def _merge_item(trails: Trails, duplicates: dict[str, set[str]], key: str, value: tuple[str, str]) -> None:
    """Merge one already ``www.``-stripped item, recording every reference seen for the key."""
    current = trails.get(key)
    if current is None:
        trails[key] = value
        return
    references = duplicates.get(key)
    if references is None:
        duplicates[key] = {current[1], value[1]}
    else:
        references.add(value[1])
    if _accepts(current, value):
        trails[key] = value


def _merge(trails: Trails, duplicates: dict[str, set[str]], candidates: list[str], source: _Source) -> None:
    """Merge one more source into the trail set (Maltrail's ``_merge``), at C speed where possible.

    New keys are appended in source order by one ``dict.update``; the keys both sides hold get
    their previous value back and then the source's value(s) through the priority rule (keys are
    independent, so this equals Maltrail's item-by-item loop). New keys that need post-processing
    are appended to ``candidates``, which thereby stays in set order.
    """
    incoming = source.trails
    common = {key: trails[key] for key in trails.keys() & incoming.keys()}
    trails.update(incoming)
    for key, value in common.items():
        trails[key] = value
        for form in source.forms(key, incoming[key]):
            _merge_item(trails, duplicates, key, form)
    for key in source.www_values:
        if key not in common:
            first, *later = source.forms(key, incoming[key])
            trails[key] = first
            for form in later:
                _merge_item(trails, duplicates, key, form)
    candidates.extend(key for key in dict.fromkeys(source.review) if key not in common)


def _add_other_references(trails: Trails, duplicates: dict[str, set[str]], key: str) -> None:
    """Append the other sources of a key once: ``ref (+other1,other2)`` (sorted)."""
    references = duplicates.get(key)
    value = trails.get(key)
    if references is None or value is None or " (+" in value[1]:
        return
    others = sorted(references - {value[1]})
    if others:
        trails[key] = (value[0], f"{value[1]} (+{','.join(others)})")


def _rename(trails: Trails, key: str, new_key: str, value: tuple[str, str]) -> None:
    """Move a value to a new key the way Maltrail does: the new key is (re)assigned, the old deleted."""
    del trails[key]
    trails[new_key] = value


@dataclass(frozen=True)
class MergeRules:
    """The updater's options that apply once fetched sources take part (defaults: off)."""

    ip_minimum_feeds: int = 1  # Maltrail's IP_MINIMUM_FEEDS (its default is 3)
    disabled_info: re.Pattern[str] | None = None  # Maltrail's DISABLED_TRAILS_INFO_REGEX


def rows_source(rows: Trails) -> _Source:
    """A fetched source's items (feed or custom URL), merged like Maltrail merges a module's result."""
    source = _Source()
    for key, value in rows.items():
        source.trails[key] = value
        if _needs_review(key):
            source.note(key)
    return source


def _review_key(trails: Trails, duplicates: dict[str, set[str]], key: str, ip_minimum: int = 1) -> str | None:
    """Maltrail's per-key post-processing; returns the key's final name, None when it was dropped."""
    value = trails.get(key)
    if value is None:  # already renamed onto or dropped by an earlier key
        return None
    is_ua = key.startswith(_UA_PREFIXES)
    if key.isascii() or is_ua:
        new_key = key.lower()
    else:
        try:
            new_key = key.encode("idna").decode("ascii")
        except UnicodeError:
            new_key = key
    if new_key != key:
        trails[new_key] = value
        del trails[key]
        key = new_key
    info, reference = value
    if not key or (
        ("." not in key or key[0] == ".")  # cheap guard for the alphabetic-key pattern
        and _ALPHA_KEY.fullmatch(key)
        and "custom" not in reference
        and "static" not in reference
    ):
        del trails[key]
        return None
    if key[0].isdigit() and _IPV4_KEY.fullmatch(key):
        if ("parking site" in info or "sinkhole" in info) and key in duplicates:
            del duplicates[key]
        if info == "malware":
            value = trails[key] = ("potential malware site", reference)
        if ip_minimum > 1 and "custom" not in reference and "static" not in reference and (
            len(duplicates.get(key, ())) < ip_minimum
        ):
            del trails[key]
            return None
        if any(int(octet) > 255 for octet in key.split(".")):
            del trails[key]
            return None
    if not is_ua:
        if key.startswith("www.") and "/" not in key:
            del trails[key]
            key = key[4:]
            if not key:
                return None
            trails[key] = value
        if "?" in key and not key.startswith("/"):
            del trails[key]
            key = key.split("?")[0]
            if not key:
                return None
            trails[key] = value
        if "//" in key:
            _rename(trails, key, key.replace("//", "/"), value)
            key = key.replace("//", "/")
    if key != key.lower():  # a non-ASCII key that IDNA could not encode
        _rename(trails, key, key.lower(), value)
        key = key.lower()
    _add_other_references(trails, duplicates, key)
    return key


def _post_process(trails: Trails, duplicates: dict[str, set[str]], candidates: list[str], ip_minimum: int = 1
                  ) -> list[str]:
    """Maltrail's post-processing pass; returns the final names of the keys it looked at.

    Maltrail runs every key through the pass; only ``candidates`` (keys passing ``_needs_review``,
    in set order) can be changed or dropped by it, so only those are walked. The reference suffix
    of keys with several sources, the only step that depends on the value alone, is then
    completed for every such key.
    """
    final_names = []
    for key in candidates:
        final = _review_key(trails, duplicates, key, ip_minimum)
        if final is not None:
            final_names.append(final)
    for key in duplicates:
        _add_other_references(trails, duplicates, key)
    return final_names


def _drop_unwanted(trails: Trails, whitelist: Whitelist | None, candidates: list[str]) -> None:
    """Drop whitelisted keys (IP/exact test) and keys starting with ``127.``, ``192.168.``, ``localhost``.

    Only exact whitelist entries can hit an arbitrary key; range and prefix hits are dotted quads
    or prefixed keys, all of which are among the post-processing ``candidates``.
    """
    if whitelist is not None:
        for key in trails.keys() & whitelist.exact:
            del trails[key]
    in_ranges = whitelist.is_ip_whitelisted if whitelist is not None and whitelist.ranges4 else None
    for key in candidates:
        if (
            key[0] in _DROP_FIRST_CHARS
            and key in trails
            and (key.startswith(BAD_TRAIL_PREFIXES) or (in_ranges is not None and in_ranges(key)))
        ):
            del trails[key]


def is_built_set(specs: Sequence[str | Trails | SourceRows]) -> bool:
    """Is this a lone file (a ``trails.csv``), which ``load_sources`` takes as a built set?"""
    return len(specs) == 1 and isinstance(specs[0], str) and not specs[0].startswith(CUSTOM_SPEC_PREFIX) and (
        Path(specs[0]).is_file()
    )


def load_sources(specs: Sequence[str | Trails | SourceRows], whitelist: Whitelist | None,
                 rules: MergeRules = MergeRules()) -> Trails:
    """Read and merge trail sources in order, normalise them and drop whitelisted keys.

    Each spec is a static trail folder (directory), a ``trails.csv`` (``.csv`` file),
    ``custom:DIR``, a fetched source's rows (a ``Trails`` dict: a feed or a custom URL list) or a
    source already read (``read_source``, ``read_list_text``). A
    lone ``trails.csv`` is a built set and kept as written (spec 1.1). Maltrail merges feeds, then
    custom trails, then static ones, then custom URLs; pass them in that order for the same
    precedence. Raises TrailSourceError for a missing, unreadable or empty source.
    """
    if is_built_set(specs):
        return _load_built_csv(specs[0], whitelist)
    trails: Trails = {}
    candidates: list[str] = []
    duplicates: dict[str, set[str]] = {}
    for spec in specs:
        if isinstance(spec, _Source):
            source = spec
        else:
            source = _read_spec(spec) if isinstance(spec, str) else rows_source(spec)
        if trails:
            _merge(trails, duplicates, candidates, source)
        else:  # reuse the first source's dict: copying 1.6 M keys would cost about a second
            trails = source.settle(duplicates)
            candidates = list(dict.fromkeys(source.review))
    if rules.disabled_info is not None:
        drop_disabled_info(trails, rules.disabled_info)
    final_names = _post_process(trails, duplicates, candidates, rules.ip_minimum_feeds)
    _drop_unwanted(trails, whitelist, final_names)
    return trails


def drop_disabled_info(trails: Trails, pattern: re.Pattern[str]) -> None:
    """Maltrail's DISABLED_TRAILS_INFO_REGEX: the regex runs once per distinct info, not per key."""
    disabled = {info for info in {value[0] for value in trails.values()} if pattern.search(info)}
    if disabled:
        for key in [key for key, value in trails.items() if value[0] in disabled]:
            del trails[key]


def _load_built_csv(spec: str, whitelist: Whitelist | None, text: str | None = None) -> Trails:
    """A `trails.csv` on its own is an already built trail set (Maltrail's runtime store, spec
    1.1): rows are taken as they are (keys lower-cased, later duplicates win) and only
    whitelisted keys are dropped; the updater's rules (``127.`` prefixes, alphabetic keys, ...)
    are for merging sources, not for a set the user built. Merged with other sources, it is
    treated like a feed. ``text``: the file's text when already read (a ``.csv`` file)."""
    source = _read_spec(spec, review=False) if text is None else _read_trails_csv(spec, False, text)
    trails = source.settle({})
    joined = "".join(trails)
    if not (joined.isascii() and joined == joined.lower()):  # else no key changes (ASCII is context-free)
        trails = dict(zip(map(str.lower, trails), trails.values(), strict=True))
    if whitelist is not None:
        dropped = trails.keys() & whitelist.exact
        if whitelist.ranges4:  # range hits are dotted quads: a digit first, never a colon
            digit_first = list(compress(trails, map(str.isdigit, map(_FIRST_CHAR, trails))))
            quads = compress(digit_first, map(not_, map(str.__contains__, digit_first, repeat(":"))))
            dropped.update(filter(whitelist.is_ip_whitelisted, quads))
        for key in dropped:
            del trails[key]
    return trails


def wildcard_trails(trails: Trails) -> list[tuple[str, str, str]]:
    """The regex trails the sensor uses for DNS names (spec 1.5): ``(pattern, info, reference)``.

    Eligible: reference contains ``static``, key contains ``]*``, ``]+``, ``.*``, ``.+`` or a
    ``[a-z0-9_.-]`` class, and compiles. (Maltrail also requires ``re.escape(key) != key``, which
    every key passing the first test satisfies.) Only the first 100 in trail-set order are used.
    """
    found: list[tuple[str, str, str]] = []
    # ']', '*' or '+' is required by the test; checking them first keeps this cheap on 1.6 M keys
    joined = "".join(trails)
    if "]" not in joined and "*" not in joined and "+" not in joined:
        return found
    for key in [key for key in trails if "]" in key or "*" in key or "+" in key]:
        info, reference = trails[key]
        if "static" not in reference or _WILDCARD_HINT.search(key) is None:
            continue
        try:
            re.compile(key)
        except re.error:
            continue
        found.append((key, info, reference))
        if len(found) == MAX_WILDCARD_TRAILS:
            break
    return found
