"""What `maltrail update` remembers between runs: per source and per URL, in ``CACHE/state.json``.

Per URL: the validators for conditional requests (ETag, Last-Modified) and the file holding the
last good body, so a 304, a failed fetch or ``--offline`` can reuse it. Per source: the figures
``--status`` prints and the digest of its content in the installed index (whose metadata holds
the digest of all inputs: an update whose inputs did not change leaves the file alone).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_VERSION = 1
STATES = ("ok", "stale", "empty", "failing", "disabled")


@dataclass
class SourceRecord:
    """One source's last attempt and last success."""

    name: str
    kind: str  # static | feed | custom | url
    urls: list[str] = field(default_factory=list)
    last_attempt: float | None = None
    last_success: float | None = None
    http_status: int | None = None
    rows: int = 0
    whitelisted: int = 0
    dropped: int = 0  # bogon/CDN ranges and bare public suffixes
    error: str = ""
    disabled: bool = False
    good_rows: int = 0  # rows of the last good content (the fail-closed shrink test compares with it)
    digest: str = ""  # its content as of the installed index

    def state(self, now: float, period: float) -> str:
        if self.disabled:
            return "disabled"
        if self.error:
            return "failing"
        if self.last_success is None or not self.rows:
            return "empty"
        if period and now - self.last_success > 2 * period:
            return "stale"
        return "ok"


@dataclass
class UrlEntry:
    """Validators and the cached last good body of one URL."""

    etag: str | None = None
    last_modified: str | None = None
    sha256: str = ""
    size: int = 0
    fetched: float = 0.0


@dataclass
class UpdateState:
    sources: dict[str, SourceRecord] = field(default_factory=dict)
    urls: dict[str, UrlEntry] = field(default_factory=dict)

    def record(self, name: str, kind: str) -> SourceRecord:
        rec = self.sources.get(name)
        if rec is None or rec.kind != kind:
            rec = self.sources[name] = SourceRecord(name, kind)
        return rec


def url_key(url: str) -> str:
    """File name of a URL's cached body."""
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def load_state(path: Path) -> UpdateState:
    """The saved state; a missing or unreadable file starts afresh (the cache is then re-fetched)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return UpdateState()
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        return UpdateState()
    try:
        return UpdateState(
            sources={k: SourceRecord(**v) for k, v in data.get("sources", {}).items()},
            urls={k: UrlEntry(**v) for k, v in data.get("urls", {}).items()})
    except (TypeError, ValueError):
        return UpdateState()


def save_state(path: Path, state: UpdateState) -> None:
    """Written beside and renamed into place: a crash never leaves half a state file."""
    data = {"version": STATE_VERSION, "sources": {k: asdict(v) for k, v in state.sources.items()},
            "urls": {k: asdict(v) for k, v in state.urls.items()}}
    fd, tmp = tempfile.mkstemp(prefix=".state.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "never"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def status_rows(state: UpdateState, period: float, now: float | None = None) -> list[dict[str, Any]]:
    """One row per source, as `--status --json` prints them."""
    now = time.time() if now is None else now
    rows = []
    for rec in state.sources.values():
        age = now - rec.last_success if rec.last_success else None
        rows.append({"name": rec.name, "kind": rec.kind, "state": rec.state(now, period),
                     "last_attempt": rec.last_attempt, "last_success": rec.last_success,
                     "http_status": rec.http_status, "rows": rec.rows, "whitelisted": rec.whitelisted,
                     "dropped": rec.dropped, "age_seconds": None if age is None else round(age, 1),
                     "error": rec.error, "urls": rec.urls})
    return rows


def status_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The table `--status` prints: one line per source, then the failing ones' reasons."""
    header = ("source", "state", "last attempt", "last success", "http", "rows", "whitelisted", "age")
    table = [header] + [(r["name"], r["state"], _when(r["last_attempt"]), _when(r["last_success"]),
                         str(r["http_status"] or "-"), str(r["rows"]), str(r["whitelisted"]),
                         _age(r["age_seconds"])) for r in rows]
    widths = [min(48, max(len(row[i]) for row in table)) for i in range(len(header))]
    lines = ["  ".join(cell[:48].ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in table]
    lines += [f"{r['name']}: {r['error']}" for r in rows if r["error"]]
    return lines
