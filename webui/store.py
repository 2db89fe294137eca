"""The embedded event index (SQLite, WAL): built from `LOG_DIR/YYYY-MM-DD.log`, never the truth.

Each log file is ingested from the byte offset reached last time, one transaction per chunk of
whole lines, so the index follows a growing file cheaply and a crash never leaves half a chunk.
A truncated, replaced or deleted file drops its day and (if still there) is read again. A missing
or outdated index (schema or severity rules changed) is rebuilt from the logs.

Tables: `events` (rowid = event id), `threats` (one row per group of `webui.grouping`: source and
normalised trail, or source and heuristic family), `threat_values` (a threat's distinct raw
trails, at most `MAX_VALUES`), and `agg`, one row
per (day, threat, type) with count, first/last seen, severity and 24 hourly counters, so threats
over a date range are served without reading raw events. Shared triage and suppressions live in
a separate database (`triage.sqlite`) that a rebuild never touches.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from itertools import chain
from pathlib import Path

from engine.severity import Severity
from engine.ship.files import SENSORS_DIR
from webui.grouping import FLOOD_MARK, FLOOD_SOURCES, flood_tid, group_key, threat_tid
from webui.logparse import TimeParser, parse_other, scan, unquote
from webui.netaddr import in_range_text, in_scope_text, ip_key, trail_in_range

SCHEMA_VERSION = "4"
DAY_FILE = re.compile(r"(\d{4}-\d{2}-\d{2})\.log\Z")
CHUNK_BYTES = 4 << 20
SYNC_BYTES = 16 << 20  # per call of the server's ingest loop
THREAT_CACHE = 300_000
GROUP_CACHE = 100_000
CONTEXT_CACHE = 200_000
FLOOD_USER = "maltrail"  # the author of the history line a flood's merge writes
MAX_VALUES = 100
HEAD_BYTES = 256
HOURS = tuple(f"h{i:02d}" for i in range(24))
QUERY_SECONDS = 20.0

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files(name TEXT PRIMARY KEY, day TEXT NOT NULL, offset INTEGER NOT NULL,
    inode INTEGER NOT NULL, head BLOB NOT NULL, malformed INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS threats(id INTEGER PRIMARY KEY, tid TEXT NOT NULL UNIQUE, src_ip TEXT NOT NULL,
    trail TEXT NOT NULL, src_key BLOB, gkey TEXT NOT NULL, sources INTEGER, UNIQUE(src_ip, gkey));
CREATE INDEX IF NOT EXISTS threats_gkey ON threats(gkey);
CREATE TABLE IF NOT EXISTS threat_sources(threat INTEGER NOT NULL, src_ip TEXT NOT NULL, src_key BLOB,
    PRIMARY KEY(threat, src_ip)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS threat_values(threat INTEGER NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY(threat, value)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS threats_src ON threats(src_key);
CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY, day TEXT NOT NULL, time REAL NOT NULL,
    hour INTEGER NOT NULL, sensor TEXT, src_ip TEXT, src_port TEXT, dst_ip TEXT, dst_port TEXT, dport INTEGER,
    proto TEXT, type TEXT, trail TEXT, info TEXT, reference TEXT, sev INTEGER NOT NULL, threat INTEGER NOT NULL,
    src_key BLOB, dst_key BLOB);
CREATE INDEX IF NOT EXISTS events_day ON events(day);
CREATE INDEX IF NOT EXISTS events_threat ON events(threat, day);
CREATE INDEX IF NOT EXISTS events_dst ON events(dst_key, day);
CREATE TABLE IF NOT EXISTS agg(day TEXT NOT NULL, threat INTEGER NOT NULL, type TEXT NOT NULL,
    cnt INTEGER NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL, sev INTEGER NOT NULL,
    last_event INTEGER NOT NULL, {", ".join(f"{h} INTEGER NOT NULL" for h in HOURS)},
    PRIMARY KEY(day, threat, type)) WITHOUT ROWID;
"""

TRIAGE_SCHEMA = """
CREATE TABLE IF NOT EXISTS triage(src_ip TEXT NOT NULL, trail TEXT NOT NULL, status TEXT NOT NULL,
    note TEXT NOT NULL, user TEXT NOT NULL, updated REAL NOT NULL, PRIMARY KEY(src_ip, trail)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS suppressions(id INTEGER PRIMARY KEY, scope TEXT NOT NULL, src_ip TEXT NOT NULL,
    trail TEXT NOT NULL, note TEXT NOT NULL, user TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS triage_log(id INTEGER PRIMARY KEY, src_ip TEXT NOT NULL, trail TEXT NOT NULL,
    status TEXT NOT NULL, note TEXT NOT NULL, tags TEXT NOT NULL, user TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS triage_log_key ON triage_log(src_ip, trail);
CREATE TABLE IF NOT EXISTS views(id INTEGER PRIMARY KEY, user TEXT NOT NULL, name TEXT NOT NULL, q TEXT NOT NULL,
    day_from TEXT NOT NULL, day_to TEXT NOT NULL, days INTEGER NOT NULL, created REAL NOT NULL, UNIQUE(user, name));
"""

_AGG_INSERT = f"INSERT INTO agg(day, threat, type, cnt, first_seen, last_seen, sev, last_event, {', '.join(HOURS)}) "
_AGG_CONFLICT = (
    "ON CONFLICT(day, threat, type) DO UPDATE SET "
    "cnt = cnt + excluded.cnt, first_seen = min(first_seen, excluded.first_seen), "
    "last_seen = max(last_seen, excluded.last_seen), sev = max(sev, excluded.sev), "
    "last_event = max(last_event, excluded.last_event), "
    + ", ".join(f"{h} = {h} + excluded.{h}" for h in HOURS)
)
EVENT_ROWS = 200  # rows per INSERT statement: binding and stepping cost less per row than one at a time
_EVENT_ROW = f"({','.join('?' * 19)})"  # the columns of `events`
_EVENT_INSERT = f"INSERT INTO events VALUES {_EVENT_ROW}"
_EVENTS_INSERT = f"INSERT INTO events VALUES {','.join([_EVENT_ROW] * EVENT_ROWS)}"
_AGG_UPSERT = f"{_AGG_INSERT}VALUES ({', '.join('?' * (8 + 24))}) {_AGG_CONFLICT}"
# the aggregates of several threats summed into one (a flood's merge): `... WHERE threat IN (...)`
_AGG_MERGE = (f"{_AGG_INSERT}SELECT day, ?, type, sum(cnt), min(first_seen), max(last_seen), max(sev), "
              f"max(last_event), {', '.join(f'sum({h})' for h in HOURS)} FROM agg")


def connect(path: Path, triage_path: Path, readonly: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("ATTACH DATABASE ? AS st", (str(triage_path),))
    conn.create_function("mt_in_scope", 2, in_scope_text, deterministic=True)
    conn.create_function("mt_in_range", 3, in_range_text, deterministic=True)
    conn.create_function("mt_trail_in_range", 3, trail_in_range, deterministic=True)
    if readonly:
        conn.execute("PRAGMA query_only=1")
    return conn


class Ingester:
    """The single writer: follows the log files into the index."""

    def __init__(self, log_dir: Path, index_dir: Path, severity: Severity,
                 flood_sources: int = FLOOD_SOURCES) -> None:
        self.log_dir = log_dir
        self.index_dir = index_dir
        self.severity = severity
        self.flood_sources = flood_sources or 1 << 62  # 0: never a flood
        self.path = index_dir / "index.sqlite"
        self.triage_path = index_dir / "triage.sqlite"
        index_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(index_dir, 0o700)
        self._open()
        self._times = TimeParser()
        self._keys: dict[str, bytes | None] = {}
        self._ports: dict[str, int | None] = {}
        self.lock = threading.Lock()
        self._budget = 0
        self.pending = False
        self._seen: dict[str, tuple[int, int, int]] = {}  # (mtime, size, inode) of files read to the end

    def _open(self) -> None:
        fresh = not self.path.exists()
        self.conn = connect(self.path, self.triage_path, readonly=False)
        self.conn.executescript(TRIAGE_SCHEMA.replace("EXISTS ", "EXISTS st."))
        columns = {r[1] for r in self.conn.execute("PRAGMA st.table_info(triage)")}
        if "tags" not in columns:  # triage databases from before tags
            self.conn.execute("ALTER TABLE st.triage ADD COLUMN tags TEXT NOT NULL DEFAULT ''")
        version = None
        if not fresh:
            with contextlib.suppress(sqlite3.DatabaseError):
                version = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        wanted = {"schema": SCHEMA_VERSION, "severity": self.severity.fingerprint,
                  "flood_sources": str(self.flood_sources)}
        if version is not None:
            version.pop("next_event", None)
        if not fresh and version != wanted:
            self.conn.close()
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.path}{suffix}")
            self.conn = connect(self.path, self.triage_path, readonly=False)
        self.conn.executescript(SCHEMA)
        self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", wanted.items())
        self.rebuilt = fresh or version != wanted
        self._open_caches()

    def close(self) -> None:
        self.conn.close()

    def _port(self, text: str) -> int | None:
        """The destination port as a number (None when it is not one), cached per text."""
        if len(self._ports) > 70_000:
            self._ports.clear()
        port = self._ports[text] = int(text) if text.isdigit() and len(text) <= 5 else None
        return port

    def _key(self, text: str) -> bytes | None:
        key = self._keys.get(text, b"")
        if key == b"":
            if len(self._keys) > 500_000:
                self._keys.clear()
            key = self._keys[text] = ip_key(text)
        return key

    def _drop_day(self, name: str, day: str) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("DELETE FROM events WHERE day = ?", (day,))
        self.conn.execute("DELETE FROM agg WHERE day = ?", (day,))
        self.conn.execute("DELETE FROM files WHERE day = ?", (day,))  # every file of the day is read again
        self.conn.execute("COMMIT")

    def progress(self) -> tuple[int, int]:
        """(bytes of the logs indexed, bytes of the logs present): the building's progress."""
        with self.lock:
            done = int(self.conn.execute("SELECT COALESCE(sum(offset), 0) FROM files").fetchone()[0])
        total = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.log_dir):
                if DAY_FILE.match(entry.name) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        total += entry.stat().st_size
        return min(done, total), total

    def sync(self, budget: int | None = None) -> int:
        """Ingest what the log files gained since the last call (at most about `budget` bytes,
        so writes of shared triage never wait long behind a rebuild); returns new events.
        `pending` tells whether the budget stopped it before the end."""
        with self.lock:
            self._budget = budget if budget is not None else 1 << 62
            self.pending = False
            return self._sync()

    def _sync(self) -> int:
        known = {row[0]: row for row in self.conn.execute("SELECT name, day, offset, inode, head FROM files")}
        present: dict[str, str] = {}
        stamps: dict[str, tuple[int, int, int]] = {}
        for folder in [self.log_dir, *self._sensor_dirs()]:
            prefix = "" if folder == self.log_dir else f"{folder.relative_to(self.log_dir)}/"
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(folder):
                    m = DAY_FILE.match(entry.name)
                    if m and entry.is_file(follow_symlinks=False):
                        present[prefix + entry.name] = m.group(1)
                        with contextlib.suppress(OSError):
                            st = entry.stat(follow_symlinks=False)
                            stamps[prefix + entry.name] = (st.st_mtime_ns, st.st_size, st.st_ino)
        for name, row in known.items():
            if name not in present:
                self._drop_day(name, row[1])
                self._seen.pop(name, None)
        added = 0
        for name in sorted(present):
            if self._budget <= 0:
                self.pending = True
                break
            stamp = stamps.get(name)
            row = self.conn.execute("SELECT name, day, offset, inode, head FROM files WHERE name = ?",
                                    (name,)).fetchone()  # fresh: dropping a day resets all its files
            if stamp is not None and row is not None and self._seen.get(name) == stamp:
                continue  # unchanged since it was read to the end: not even opened (a year of days)
            added += self._follow(name, present[name], row)
            if not self.pending and stamp is not None:
                self._seen[name] = stamp
        return added

    def _sensor_dirs(self) -> list[Path]:
        """`LOG_DIR/sensors/NAME/`: each collected sensor's day files (`[collect]`)."""
        with contextlib.suppress(FileNotFoundError):
            return sorted(Path(e.path) for e in os.scandir(self.log_dir / SENSORS_DIR)
                          if e.is_dir(follow_symlinks=False))
        return []

    def _follow(self, name: str, day: str, row: tuple | None) -> int:
        path = self.log_dir / name
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below, stat taken on the open file
        except OSError:
            return 0
        with f:
            st = os.fstat(f.fileno())
            head = f.read(HEAD_BYTES)
            offset = 0
            if row is not None:
                _, _, offset, inode, old_head = row
                if inode != st.st_ino or st.st_size < offset or head[:len(old_head)] != old_head:
                    self._drop_day(name, day)
                    offset = 0
            if st.st_size <= offset:
                return 0
            added = 0
            f.seek(offset)
            while True:
                if self._budget <= 0:
                    self.pending = True
                    break
                data = f.read(CHUNK_BYTES)
                if not data:
                    break
                self._budget -= len(data)
                end = data.rfind(b"\n") + 1
                if end == 0:
                    if len(data) < CHUNK_BYTES:
                        break  # a partial last line: wait for its newline
                    end = len(data)  # one absurdly long line: skip it as malformed
                    f.seek(offset + end)
                    self._commit(name, day, offset + end, st.st_ino, head, "", 1)
                    offset += end
                    continue
                if end < len(data):
                    f.seek(offset + end)
                added += self._commit(name, day, offset + end, st.st_ino, head,
                                      data[:end - 1].decode("utf-8", "replace"))
                offset += end
            return added

    def _commit(self, name: str, day: str, offset: int, inode: int, head: bytes, text: str,
                malformed: int = 0) -> int:
        """One chunk of whole lines (`text`, without its last newline) in one transaction."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows, aggs, bad = self._rows(day, text) if text else ([], {}, 0)
            if rows:
                whole = len(rows) - len(rows) % EVENT_ROWS
                conn.executemany(_EVENTS_INSERT, (list(chain.from_iterable(rows[i:i + EVENT_ROWS]))
                                                  for i in range(0, whole, EVENT_ROWS)))
                conn.executemany(_EVENT_INSERT, rows[whole:])
                conn.executemany(_AGG_UPSERT, ([day, threat, type_, *vals[:5], *vals[5]]
                                               for (threat, type_), vals in aggs.items()))
            self._flush_floods()
            conn.execute("INSERT INTO files(name, day, offset, inode, head, malformed) VALUES (?,?,?,?,?,?) "
                         "ON CONFLICT(name) DO UPDATE SET offset = excluded.offset, inode = excluded.inode, "
                         "head = excluded.head, malformed = malformed + excluded.malformed",
                         (name, day, offset, inode, head, malformed + bad))
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('next_event', ?)", (str(self._next_event),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            self._open_caches()
            raise
        return len(rows)

    def _open_caches(self) -> None:
        count = self.conn.execute("SELECT count(*) FROM threats").fetchone()[0]
        self._all_cached = count <= THREAT_CACHE  # the cache holds every threat: a miss is a new one
        self._threats = {(s, k): i for i, s, k in self.conn.execute("SELECT id, src_ip, gkey FROM threats")
                         } if self._all_cached else {}
        self._floods = {k[1:]: i for i, k in self.conn.execute(
            "SELECT id, gkey FROM threats WHERE sources IS NOT NULL")}
        self._sources: dict[str, int] = {}  # plain group key -> its per-source threats
        self._contexts: dict[tuple[str, ...], tuple] = {}
        self._groups: dict[tuple[str, str], tuple[str, str]] = {}
        self._values: set[tuple[int, str]] = set()
        self._value_counts: dict[int, int] = {}
        self._new_values: list[tuple[int, str]] = []
        self._new_threats: list[tuple] = []
        self._new_sources: list[tuple[int, str, bytes | None]] = []
        self._merges: list[tuple[int, str]] = []
        self._next_threat = (self.conn.execute("SELECT max(id) FROM threats").fetchone()[0] or 0) + 1
        stored = self.conn.execute("SELECT value FROM meta WHERE key = 'next_event'").fetchone()
        top = (self.conn.execute("SELECT max(id) FROM events").fetchone()[0] or 0) + 1
        self._next_event = max(top, int(stored[0]) if stored else 0)  # ids of dropped days never come back

    # --- the hot path: one pass over a chunk's lines ---------------------------------------------

    def _rows(self, day: str, text: str) -> tuple[list[tuple], dict[tuple[int, str], list], int]:
        """Event rows, the per-(threat, type) aggregate deltas and the malformed lines of one chunk.
        Plain lines come from one regex pass; what decides an event's threat and severity (source,
        type, trail, info, reference) is looked up once per distinct combination."""
        rows: list[tuple] = []
        aggs: dict[tuple[int, str], list] = {}  # [count, first seen, last seen, severity, last event, hours]
        contexts, keys, key, ports, times = self._contexts, self._keys, self._key, self._ports, self._times
        seconds, whole_of = times.seconds, times.whole
        eid = self._next_event
        bad = 0
        for m in scan(text):
            ts = m[0]
            if ts:
                whole = seconds.get(ts)
                if whole is None:
                    whole = whole_of(ts)
                    if whole is None:
                        bad += 1
                        continue
                t, hour = whole[0] + int(m[1]) / 1e6, whole[1]
                _, _, sensor, src, sport, dst, dport, proto = m[:8]
                ctx = contexts.get(m[3:4] + m[8:12])
                if ctx is None:
                    if len(contexts) >= CONTEXT_CACHE:
                        contexts.clear()
                    ctx = contexts[m[3:4] + m[8:12]] = self._context(
                        "" if src == "-" else src, "" if m[8] == "-" else m[8], unquote(m[9]), unquote(m[10]),
                        unquote(m[11]))
                if sensor == "-":
                    sensor = ""
                if sport == "-":
                    sport = ""
                if dst == "-":
                    dst = ""
                if dport == "-":
                    dport = ""
                if proto == "-":
                    proto = ""
            else:
                ev = parse_other(m[12], times)
                if ev is None:
                    bad += 1
                    continue
                t, hour, sensor, src, sport, dst, dport, proto, type_, trail, info, ref = ev
                ctx = self._context(src, type_, trail, info, ref)
            threat, sev, type_, trail, info, ref, src, skey, ak = ctx
            dkey = keys.get(dst, b"")
            if dkey == b"":
                dkey = key(dst)
            port = ports.get(dport, -1)
            if port == -1:
                port = self._port(dport)
            rows.append((eid, day, t, hour, sensor, src, sport, dst, dport, port, proto, type_, trail, info, ref,
                         sev, threat, skey, dkey))
            a = aggs.get(ak)
            if a is None:
                a = aggs[ak] = [0, t, t, sev, eid, [0] * 24]
            elif t < a[1]:
                a[1] = t
            elif t > a[2]:
                a[2] = t
            if sev > a[3]:
                a[3] = sev
            a[4] = eid
            a[5][hour] += 1
            eid += 1
        for a in aggs.values():
            a[0] = sum(a[5])
        self._stored()
        if self._new_values:
            self.conn.executemany("INSERT OR IGNORE INTO threat_values VALUES (?, ?)", self._new_values)
            self._new_values.clear()
        self._next_event = eid
        return rows, aggs, bad

    def _context(self, src: str, type_: str, trail: str, info: str, ref: str) -> tuple:
        """(threat, severity, type, trail, info, reference, source, source key, aggregate key) of
        events with these (clean) values; a new threat is stored at once."""
        group = self._groups.get((trail, info))
        if group is None:
            if len(self._groups) >= GROUP_CACHE:
                self._groups.clear()
            group = self._groups[(trail, info)] = group_key(trail, info)
        threat = self._threat(src, *group)
        if (threat, trail) not in self._values:
            self._note_value(threat, trail)
        return (threat, self.severity.of(type_, trail, info, ref), type_, trail, info, ref, src, self._key(src),
                (threat, type_))

    def _threat(self, src: str, gkey: str, display: str) -> int:
        """The threat of (source, group): a trail's flood threat once it has more than
        `flood_sources` sources, else the (source, group) threat, made when new."""
        plain = not gkey.startswith("\x00")
        if plain:
            flood = self._floods.get(gkey)
            if flood is not None:
                self._new_sources.append((flood, src, self._key(src)))
                return flood
        pair = (src, gkey)
        threat = self._threats.get(pair)
        if threat is not None:
            return threat
        if len(self._threats) >= THREAT_CACHE:  # bounded memory for years of distinct groups
            self._threats.clear()
            self._all_cached = False
        known = None if self._all_cached else self._stored().execute(
            "SELECT id FROM threats WHERE src_ip = ? AND gkey = ?", pair).fetchone()
        if known is not None:
            threat = self._threats[pair] = known[0]
            return threat
        if plain and self._count_source(gkey) > self.flood_sources:
            return self._start_flood(src, gkey, display)
        threat = self._threats[pair] = self._next_threat
        self._next_threat += 1
        self._value_counts[threat] = 0
        self._new_threats.append((threat, threat_tid(*pair), src, display, self._key(src), gkey))
        return threat

    def _stored(self) -> sqlite3.Connection:
        """The connection, once the threats made since the last call are in the table."""
        if self._new_threats:
            self.conn.executemany("INSERT INTO threats(id, tid, src_ip, trail, src_key, gkey) VALUES (?,?,?,?,?,?)",
                                  self._new_threats)
            self._new_threats.clear()
        return self.conn

    def _count_source(self, gkey: str) -> int:
        """Sources of a plain group with the one about to be added."""
        count = self._sources.get(gkey)
        if count is None:
            if len(self._sources) >= GROUP_CACHE:
                self._sources.clear()
            count = self._stored().execute("SELECT count(*) FROM threats WHERE gkey = ?", (gkey,)).fetchone()[0]
        self._sources[gkey] = count + 1
        return count + 1

    def _start_flood(self, src: str, gkey: str, display: str) -> int:
        """The trail's flood threat; its per-source threats are merged into it before the commit."""
        flood = self._next_threat
        self._next_threat += 1
        self._stored().execute("INSERT INTO threats(id, tid, src_ip, trail, src_key, gkey, sources) "
                          "VALUES (?,?,'',?,NULL,?,0)", (flood, flood_tid(gkey), display, FLOOD_MARK + gkey))
        self._floods[gkey] = flood
        self._value_counts[flood] = 0
        self._merges.append((flood, gkey))
        self._contexts.clear()  # cached contexts name the per-source threats
        self._new_sources.append((flood, src, self._key(src)))
        return flood

    def _flush_floods(self) -> None:
        """Merge the per-source threats of trails that became floods in this chunk (their events,
        aggregates, values, sources and triage), then record the floods' new sources."""
        conn = self.conn
        for flood, gkey in self._merges:
            olds = conn.execute("SELECT id, src_ip FROM threats WHERE gkey = ?", (gkey,)).fetchall()
            for i in range(0, len(olds), 500):
                ids = [o[0] for o in olds[i:i + 500]]
                marks = ",".join("?" * len(ids))
                conn.execute(f"UPDATE events SET threat = ? WHERE threat IN ({marks})", (flood, *ids))
                conn.execute(f"{_AGG_MERGE} WHERE threat IN ({marks}) GROUP BY day, type {_AGG_CONFLICT}",
                             (flood, *ids))
                conn.execute(f"DELETE FROM agg WHERE threat IN ({marks})", ids)
                conn.execute(f"INSERT OR IGNORE INTO threat_values SELECT ?, value FROM threat_values "
                             f"WHERE threat IN ({marks})", (flood, *ids))
                conn.execute(f"DELETE FROM threat_values WHERE threat IN ({marks})", ids)
                conn.execute(f"INSERT OR IGNORE INTO threat_sources SELECT ?, src_ip, src_key FROM threats "
                             f"WHERE id IN ({marks})", (flood, *ids))
                conn.execute(f"DELETE FROM threats WHERE id IN ({marks})", ids)
            conn.execute("DELETE FROM threat_values WHERE threat = ? AND value NOT IN (SELECT value FROM "
                         "threat_values WHERE threat = ? ORDER BY value LIMIT ?)", (flood, flood, MAX_VALUES))
            self._value_counts.pop(flood, None)  # counted again when next needed
            self._carry_triage(gkey, {o[1] for o in olds})
        if self._new_sources:
            conn.executemany("INSERT OR IGNORE INTO threat_sources VALUES (?,?,?)", self._new_sources)
            for flood in {s[0] for s in self._new_sources}:
                conn.execute("UPDATE threats SET sources = (SELECT count(*) FROM threat_sources WHERE threat = ?) "
                             "WHERE id = ?", (flood, flood))
        self._merges.clear()
        self._new_sources.clear()

    def _carry_triage(self, trail: str, sources: set[str]) -> None:
        """A flood threat takes over the triage of the per-source threats it merged, once: the
        latest status and note, every tag, and a history line naming what was merged. History
        lines and suppressions of the sources stay (the flood's history lists them)."""
        rows = [r for r in self.conn.execute("SELECT src_ip, status, note, user, updated, tags FROM st.triage "
                                             "WHERE trail = ?", (trail,)) if r[0] in sources and r[0]]
        if not rows:
            return
        latest = max(rows, key=lambda r: r[4])
        tags = ",".join(sorted({t for r in rows for t in r[5].split(",") if t}))
        cur = self.conn.execute("INSERT INTO st.triage(src_ip, trail, status, note, user, updated, tags) "
                                "VALUES ('', ?, ?, ?, ?, ?, ?) ON CONFLICT(src_ip, trail) DO NOTHING",
                                (trail, latest[1], latest[2], latest[3], latest[4], tags))
        if cur.rowcount:
            self.conn.execute(
                "INSERT INTO st.triage_log(src_ip, trail, status, note, tags, user, at) VALUES ('',?,?,?,?,?,?)",
                (trail, latest[1], f"flood: triage of {len(rows)} per-source threat(s) carried over "
                 f"(latest from {latest[0]}); more than {self.flood_sources} sources", tags, FLOOD_USER, time.time()))

    def _note_value(self, threat: int, trail: str) -> None:
        """Keep one more distinct raw trail of a threat (at most MAX_VALUES are stored)."""
        if len(self._values) > THREAT_CACHE:
            self._values.clear()
        self._values.add((threat, trail))
        count = self._value_counts.get(threat)
        if count is None:
            count = self.conn.execute("SELECT count(*) FROM threat_values WHERE threat = ?", (threat,)).fetchone()[0]
        if count < MAX_VALUES:
            self._new_values.append((threat, trail))
            count += 1
        if len(self._value_counts) > THREAT_CACHE:
            self._value_counts.clear()
        self._value_counts[threat] = count

    # --- shared triage (separate database, survives rebuilds) ---------------------------------

    def set_triage(self, src_ip: str, trail: str, status: str, note: str, tags: str, user: str, now: float) -> None:
        """The threat's shared triage, and one more line of its history (who, what, when)."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.execute("INSERT INTO st.triage(src_ip, trail, status, note, user, updated, tags) "
                                  "VALUES (?,?,?,?,?,?,?) ON CONFLICT(src_ip, trail) DO UPDATE SET "
                                  "status = excluded.status, note = excluded.note, user = excluded.user, "
                                  "updated = excluded.updated, tags = excluded.tags",
                                  (src_ip, trail, status, note, user, now, tags))
                self.conn.execute("INSERT INTO st.triage_log(src_ip, trail, status, note, tags, user, at) "
                                  "VALUES (?,?,?,?,?,?,?)", (src_ip, trail, status, note, tags, user, now))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def save_view(self, user: str, name: str, q: str, day_from: str, day_to: str, days: int, now: float) -> int:
        """A user's named view (search and range), replacing one of the same name."""
        with self.lock:
            self.conn.execute("INSERT INTO st.views(user, name, q, day_from, day_to, days, created) "
                              "VALUES (?,?,?,?,?,?,?) ON CONFLICT(user, name) DO UPDATE SET q = excluded.q, "
                              "day_from = excluded.day_from, day_to = excluded.day_to, days = excluded.days, "
                              "created = excluded.created", (user, name, q, day_from, day_to, days, now))
            return int(self.conn.execute("SELECT id FROM st.views WHERE user = ? AND name = ?",
                                         (user, name)).fetchone()[0])

    def delete_view(self, user: str, view_id: int) -> bool:
        with self.lock:
            return self.conn.execute("DELETE FROM st.views WHERE id = ? AND user = ?", (view_id, user)).rowcount > 0

    def add_suppression(self, scope: str, src_ip: str, trail: str, note: str, user: str, now: float) -> int:
        with self.lock:
            cur = self.conn.execute("INSERT INTO st.suppressions(scope, src_ip, trail, note, user, created) "
                                    "VALUES (?,?,?,?,?,?)", (scope, src_ip, trail, note, user, now))
            return int(cur.lastrowid or 0)

    def delete_suppression(self, rule_id: int) -> bool:
        with self.lock:
            return self.conn.execute("DELETE FROM st.suppressions WHERE id = ?", (rule_id,)).rowcount > 0


class QueryTooLong(Exception):
    """A read ran past its time limit and was interrupted by SQLite."""


class Readers:
    """One read-only connection per reader thread. A snapshot has a time limit: SQLite's progress
    handler interrupts it, so one huge query cannot hold a reader thread for minutes."""

    def __init__(self, path: Path, triage_path: Path) -> None:
        self.path = path
        self.triage_path = triage_path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, self.triage_path, readonly=True)
            local = self._local
            local.deadline = math.inf
            conn.set_progress_handler(lambda: time.monotonic() > local.deadline, 20_000)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def snapshot(self, seconds: float = QUERY_SECONDS) -> Iterator[sqlite3.Connection]:
        """Several queries that see one consistent state of the index, within `seconds`."""
        conn = self.get()
        self._local.deadline = time.monotonic() + seconds
        conn.execute("BEGIN")
        try:
            yield conn
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise QueryTooLong(str(exc)) from None
            raise
        finally:
            self._local.deadline = math.inf
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
