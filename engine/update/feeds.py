"""Maltrail's trail feeds as data (``engine/data/feeds.toml``) and the few generic parsers they need.

Each feed is one TOML table; its ``format`` picks a parser and a handful of generic options cover
the feeds' individual rules, so there is no code per feed. A parser turns one body into the rows
the feed module would hand to Maltrail's updater, ``{trail: (info, reference)}``; merging, the
``www.``/IDNA/lower-casing post-processing and the whitelist are the trail-set builder's job.

Formats:

* ``plain``: one row per line (trimmed; empty and ``#`` lines skipped, ``require`` defaults to
  ``["."]``, Maltrail's plain-list rule);
* ``csv``: a ``plain`` line split on ``delimiter``, fields trimmed of blanks and ``"``;
* ``regex``: every match of ``pattern`` in the whole body is a row;
* ``json``: every string at ``path`` (``a.b[].c[]``) is a row.

``trail``, ``info`` and ``reference`` are templates: ``{N}`` is field N of a row (a CSV column
from 1, a regex group; ``{0}`` is the whole line, match or JSON value), ``{name}`` a named group.
A row whose template names a field it lacks is skipped, as is a row whose trail ends up empty.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.resources import data_file

Rows = dict[str, tuple[str, str]]
Step = tuple[str, Any]  # ("lower", None), ("sub", (pattern, replacement)), ("extract", pattern), ...

FORMATS = ("plain", "csv", "regex", "json")
NAMED_STEPS = ("lower", "drop_scheme", "trim_slash", "cut_query", "strip_dots", "hex_decode")

_COMMON_KEYS = {
    "urls", "format", "enabled", "info", "reference", "check", "fallback", "follow", "follow_url", "headers",
    "trail", "transform", "info_transform", "info_default", "match", "ip_info", "also_host",
}  # fmt: skip
_LINE_KEYS = {"line_break", "strip_comment", "require", "skip"}
_FORMAT_KEYS = {
    "plain": _COMMON_KEYS | _LINE_KEYS,
    "csv": _COMMON_KEYS | _LINE_KEYS | {"delimiter", "fields", "where"},
    "regex": _COMMON_KEYS | {"pattern"},
    "json": _COMMON_KEYS | {"path"},
}
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_DOTTED_QUAD = re.compile(r"\d+\.\d+\.\d+\.\d+")
_HEX_RUN = re.compile(r"\|([^|]*)\|")
_JSON_STEP = re.compile(r"(\w+)(\[\])?")


class FeedError(Exception):
    """One-line reason a feed yields nothing usable (e.g. body lacks the check substring)."""


@dataclass(frozen=True)
class FeedSpec:
    """One feed's definition, validated; option meanings are in ``engine/data/feeds.toml``'s header."""

    name: str
    urls: tuple[str, ...]
    enabled: bool
    info: str
    reference: str
    check: str | None
    format: str = "plain"
    fallback: str | None = None
    follow: re.Pattern[str] | None = None
    follow_url: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    line_break: str | None = None
    strip_comment: bool = False
    require: tuple[str, ...] = (".",)
    skip: tuple[str, ...] = ()
    delimiter: str = ","
    fields: int | None = None
    where: tuple[tuple[int, str], ...] = ()
    pattern: re.Pattern[str] | None = None
    path: tuple[tuple[str, bool], ...] = ()
    trail: str = "{0}"
    transform: tuple[Step, ...] = ()
    info_transform: tuple[Step, ...] = ()
    info_default: str = ""
    match: re.Pattern[str] | None = None
    ip_info: str | None = None
    also_host: bool = False


def _fail(name: str, message: str) -> FeedError:
    return FeedError(f"feed {name}: {message}")


def _typed(name: str, table: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    """``table[key]`` checked against ``kind`` (``default`` when absent)."""
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _fail(name, f"key '{key}' must be {kind.__name__}")
    return value


def _strings(name: str, table: dict[str, Any], key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    value = _typed(name, table, key, list, None)
    if value is None:
        return default
    if not all(isinstance(item, str) for item in value):
        raise _fail(name, f"key '{key}' must be a list of strings")
    return tuple(value)


def _regex(name: str, key: str, text: str | None) -> re.Pattern[str] | None:
    if text is None:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        raise _fail(name, f"key '{key}' is not a valid regex ({exc})") from None


def _steps(name: str, table: dict[str, Any], key: str) -> tuple[Step, ...]:
    """A ``transform`` list: step names, ``{sub = [pattern, replacement]}`` or ``{extract = pattern}``."""
    steps: list[Step] = []
    for item in _typed(name, table, key, list, []):
        if isinstance(item, str) and item in NAMED_STEPS:
            steps.append((item, None))
        elif isinstance(item, dict) and item.keys() == {"sub"} and isinstance(item["sub"], list):
            if len(item["sub"]) != 2 or not all(isinstance(part, str) for part in item["sub"]):
                raise _fail(name, f"key '{key}': sub takes [pattern, replacement]")
            steps.append(("sub", (_regex(name, key, item["sub"][0]), item["sub"][1])))
        elif isinstance(item, dict) and item.keys() == {"extract"} and isinstance(item["extract"], str):
            steps.append(("extract", _regex(name, key, item["extract"])))
        else:
            raise _fail(name, f"key '{key}': unknown step {item!r}")
    return tuple(steps)


def _check_templates(name: str, fmt: str, pattern: re.Pattern[str] | None, templates: dict[str, str]) -> None:
    """Refuse placeholders no row of this format can have."""
    for key, template in templates.items():
        for ref in _PLACEHOLDER.findall(template):
            if fmt == "csv":
                ok = ref.isdigit()
            elif pattern is not None:
                ok = int(ref) <= pattern.groups if ref.isdigit() else ref in pattern.groupindex
            else:
                ok = ref == "0"
            if not ok:
                raise _fail(name, f"key '{key}': no field {{{ref}}} in format {fmt}")


def _spec(name: str, table: Any) -> FeedSpec:
    """Validate one feed table into a FeedSpec."""
    if not isinstance(table, dict):
        raise _fail(name, "not a table")
    fmt = _typed(name, table, "format", str, "plain")
    if fmt not in _FORMAT_KEYS:
        raise _fail(name, f"unknown format '{fmt}' (one of {', '.join(FORMATS)})")
    for key in table:
        if key not in _FORMAT_KEYS[fmt]:
            raise _fail(name, f"unknown key '{key}' for format {fmt}")
    for key in ("urls", "info", "reference"):
        if key not in table:
            raise _fail(name, f"key '{key}' is required")
    urls = _strings(name, table, "urls")
    if not urls:
        raise _fail(name, "key 'urls' is empty")
    check = _typed(name, table, "check", str)
    fallback = _typed(name, table, "fallback", str)
    if fallback is not None and not check:
        raise _fail(name, "key 'fallback' needs 'check'")
    follow = _regex(name, "follow", _typed(name, table, "follow", str))
    follow_url = _typed(name, table, "follow_url", str, "")
    if (follow is None) != (not follow_url):
        raise _fail(name, "keys 'follow' and 'follow_url' go together")
    pattern = _regex(name, "pattern", _typed(name, table, "pattern", str))
    if fmt == "regex" and pattern is None:
        raise _fail(name, "format regex needs 'pattern'")
    path_text = _typed(name, table, "path", str, "")
    steps = [_JSON_STEP.fullmatch(step) for step in path_text.split(".")] if path_text else []
    if not all(steps) or (fmt == "json" and not steps):
        raise _fail(name, "key 'path' must look like 'key[].key' (format json needs one)")
    path = tuple((step.group(1), bool(step.group(2))) for step in steps if step)
    where = []
    for column, value in _typed(name, table, "where", dict, {}).items():
        if not column.isdigit() or not isinstance(value, str):
            raise _fail(name, "key 'where' maps column numbers to strings")
        where.append((int(column), value))
    headers = _typed(name, table, "headers", dict, {})
    if not all(isinstance(value, str) for value in headers.values()):
        raise _fail(name, "key 'headers' maps names to strings")
    default_trail = "{1}" if fmt in ("csv", "regex") else "{0}"
    templates = {key: _typed(name, table, key, str, "") for key in ("info", "reference")}
    templates["trail"] = _typed(name, table, "trail", str, default_trail)
    _check_templates(name, fmt, pattern, templates)
    if follow is not None:
        _check_templates(name, "regex", follow, {"follow_url": follow_url})
    return FeedSpec(
        name=name,
        urls=urls,
        enabled=_typed(name, table, "enabled", bool, True),
        info=templates["info"],
        reference=templates["reference"],
        check=check,
        format=fmt,
        fallback=fallback,
        follow=follow,
        follow_url=follow_url,
        headers=tuple(headers.items()),
        line_break=_typed(name, table, "line_break", str),
        strip_comment=_typed(name, table, "strip_comment", bool, False),
        require=_strings(name, table, "require", (".",)),
        skip=_strings(name, table, "skip"),
        delimiter=_typed(name, table, "delimiter", str, ","),
        fields=_typed(name, table, "fields", int),
        where=tuple(where),
        pattern=pattern,
        path=path,
        trail=templates["trail"],
        transform=_steps(name, table, "transform"),
        info_transform=_steps(name, table, "info_transform"),
        info_default=_typed(name, table, "info_default", str, ""),
        match=_regex(name, "match", _typed(name, table, "match", str)),
        ip_info=_typed(name, table, "ip_info", str),
        also_host=_typed(name, table, "also_host", bool, False),
    )


def load_feeds(path: Path | None = None) -> dict[str, FeedSpec]:
    """Feed definitions by name (default: the bundled ``feeds.toml``); a bad one raises FeedError."""
    source = path if path is not None else data_file("feeds.toml")
    try:
        tables = tomllib.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FeedError(f"feed definitions {source}: unreadable ({exc})") from None
    return {name: _spec(name, table) for name, table in tables.items()}


def _hex_decode(text: str) -> str | None:
    """Snort/Suricata content escapes: ``|2e 63|`` becomes ``.c``; None when a run is not hex/UTF-8."""
    try:
        return _HEX_RUN.sub(lambda run: bytes.fromhex(run.group(1)).decode("utf-8"), text)
    except (ValueError, UnicodeDecodeError):
        return None


def _apply(steps: tuple[Step, ...], value: str) -> str | None:
    """Run transform steps over one value; None means the value is invalid (row dropped)."""
    for kind, arg in steps:
        if kind == "lower":
            value = value.lower()
        elif kind == "drop_scheme":
            value = value.split("://", 1)[-1]
        elif kind == "trim_slash":
            value = value.rstrip("/")
        elif kind == "cut_query":
            value = re.split(r"[?#]", value, maxsplit=1)[0]
        elif kind == "strip_dots":
            value = value.strip(".")
        elif kind == "hex_decode":
            decoded = _hex_decode(value)
            if decoded is None:
                return None
            value = decoded
        elif kind == "sub":
            value = arg[0].sub(arg[1], value)
        else:  # extract: the first group that took part in the first match, "" without a match
            found = arg.search(value)
            value = "" if found is None else next((g for g in found.groups() if g is not None), found.group(0))
    return value


def _fill(template: str, fields: dict[str, str], steps: tuple[Step, ...] = (), default: str = "") -> str | None:
    """A template with its ``{N}``/``{name}`` placeholders filled; None when a field is missing."""
    if template == "{0}" and not steps:  # the common plain-list case, without a regex substitution per row
        return fields["0"]
    if "{" not in template:
        return template
    missing = False

    def field(ref: re.Match[str]) -> str:
        nonlocal missing
        value = fields.get(ref.group(1))
        if value is None:
            missing = True
            return ""
        value = _apply(steps, value) or ""
        return value or default

    filled = _PLACEHOLDER.sub(field, template)
    return None if missing else filled


def _add(spec: FeedSpec, rows: Rows, fields: dict[str, str]) -> None:
    """Turn one row's fields into trail(s) with their (info, reference)."""
    trail = _fill(spec.trail, fields)
    if trail is None:
        return
    trail = _apply(spec.transform, trail)
    if trail is None:
        return
    trail = trail.strip()
    if not trail or (spec.match is not None and spec.match.search(trail) is None):
        return
    info = _fill(spec.info, fields, spec.info_transform, spec.info_default)
    reference = _fill(spec.reference, fields)
    if info is None or reference is None:
        return
    trails = [trail]
    if spec.also_host:
        host = trail.split("/", 1)[0].split(":", 1)[0]
        trails = [trail, host] if "/" in trail else [host]
    for key in trails:
        if key:
            quad = spec.ip_info is not None and _DOTTED_QUAD.fullmatch(key)
            rows[key] = (spec.ip_info if quad else info, reference)


def _lines(spec: FeedSpec, text: str) -> Rows:
    """The ``plain`` and ``csv`` formats."""
    rows: Rows = {}
    if spec.line_break:
        text = text.replace(spec.line_break, "\n")
    need = max((int(ref) for ref in _PLACEHOLDER.findall(spec.trail + spec.info + spec.reference)), default=0)
    need = max([need, *(column for column, _ in spec.where)])
    for raw in text.split("\n"):
        line = raw.strip()
        if spec.strip_comment:
            line = line.split("#", 1)[0].strip()
        if (
            not line
            or line.startswith("#")
            or not all(part in line for part in spec.require)
            or any(part in line for part in spec.skip)
        ):
            continue
        fields = {"0": line}
        if spec.format == "csv":
            columns = line.split(spec.delimiter)
            if len(columns) < need or (spec.fields is not None and len(columns) != spec.fields):
                continue
            fields.update((str(number), value.strip().strip('"')) for number, value in enumerate(columns, 1))
            if any(fields[str(column)] != value for column, value in spec.where):
                continue
        _add(spec, rows, fields)
    return rows


def _json_values(spec: FeedSpec, text: str) -> list[str]:
    """The strings at ``spec.path``; anything of another shape on the way is skipped."""
    try:
        nodes = [json.loads(text)]
    except (ValueError, RecursionError) as exc:
        raise _fail(spec.name, f"body is not valid JSON ({str(exc).splitlines()[0]})") from None
    for key, is_list in spec.path:
        nodes = [node[key] for node in nodes if isinstance(node, dict) and key in node]
        if is_list:
            nodes = [item for node in nodes if isinstance(node, list) for item in node]
    return [node for node in nodes if isinstance(node, str)]


def _groups(found: re.Match[str]) -> dict[str, str]:
    """A regex match as template fields: ``0`` the match, ``N`` and names its groups."""
    fields = {str(number): value or "" for number, value in enumerate([found.group(0), *found.groups()])}
    fields.update((name, value or "") for name, value in found.groupdict().items())
    return fields


def parse_body(spec: FeedSpec, text: str) -> Rows:
    """One body -> ``{trail: (info, reference)}``; FeedError when it lacks ``check`` or is not valid."""
    if spec.check and spec.check not in text:
        raise _fail(spec.name, f"body lacks {spec.check!r}")
    if spec.format in ("plain", "csv"):
        return _lines(spec, text)
    rows: Rows = {}
    if spec.format == "json":
        for value in _json_values(spec, text):
            _add(spec, rows, {"0": value})
        return rows
    assert spec.pattern is not None  # validated by load_feeds
    for found in spec.pattern.finditer(text):
        _add(spec, rows, _groups(found))
    return rows


def _followed(spec: FeedSpec, get: Callable[[str], str]) -> list[str]:
    """Two-step feeds: the page at the first URL names (last ``follow`` match) the body to parse."""
    page = get(spec.urls[0])
    if spec.check and spec.check not in page:
        raise _fail(spec.name, f"page {spec.urls[0]} lacks {spec.check!r}")
    assert spec.follow is not None
    found = list(spec.follow.finditer(page))
    if not found:
        raise _fail(spec.name, f"page {spec.urls[0]} has no match for 'follow'")
    return [_fill(spec.follow_url, _groups(found[-1])) or ""]


def collect(spec: FeedSpec, get: Callable[[str], str]) -> Rows:
    """All rows of one feed; ``get(url)`` returns a body (its exceptions propagate).

    Every URL is fetched; one whose body lacks ``check`` is tried at ``fallback`` if there is one,
    otherwise skipped. FeedError when no body was usable.
    """
    urls = _followed(spec, get) if spec.follow is not None else list(spec.urls)
    rows: Rows = {}
    errors: list[FeedError] = []
    for url in urls:
        body = get(url)
        if spec.fallback is not None and spec.check and spec.check not in body:
            body = get(spec.fallback)
        try:
            rows.update(parse_body(spec, body))
        except FeedError as exc:
            errors.append(exc)
    if len(errors) == len(urls):
        raise errors[0]
    return rows
