"""Read queries over the index: threats (grouped, filtered, sorted, paged), their events, per-day
counts, chart statistics and the live tail.

Every query is built from three parts, all with bound parameters: the date range, the user's
network scope, and the compiled search. `_rows` yields aggregate-shaped rows (one per day,
threat and type): straight from `agg` when nothing needs single events, otherwise from `events`
grouped on the fly. Scope is exact: a threat whose source is in scope brings all its events
(served from `agg`); for the others only events whose destination is in scope are counted.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from engine.severity import NAMES
from webui.grouping import trail_rule_sql
from webui.netaddr import Network, Scope
from webui.search import Query
from webui.store import HOURS, MAX_VALUES

SORTS = {
    "severity": "f.sev {o}, f.last_seen {o}",
    "count": "f.cnt {o}",
    "first_seen": "f.first_seen {o}",
    "last_seen": "f.last_seen {o}",
    "src_ip": "f.src_key {o}, f.src_ip {o}",
    "dst_ip": "e.dst_key {o}, e.dst_ip {o}",
    "dst_port": "e.dport {o}, e.dst_port {o}",
    "proto": "e.proto COLLATE NOCASE {o}",
    "type": "e.type COLLATE NOCASE {o}",
    "trail": "f.trail COLLATE NOCASE {o}",
    "info": "e.info COLLATE NOCASE {o}",
    "sensor": "e.sensor COLLATE NOCASE {o}",
}
IN_CHUNK = 1000
EVENT_SORTS = {"dst_ip", "dst_port", "proto", "type", "info", "sensor"}
EVENT_COLUMNS = "e.id, e.time, e.sensor, e.src_ip, e.src_port, e.dst_ip, e.dst_port, e.proto, e.type, e.trail, " \
                "e.info, e.reference, e.sev"
_HOUR_FLAGS = ", ".join(f"(e.hour = {i}) AS {h}" for i, h in enumerate(HOURS))
_AGG_COLUMNS = f"a.threat, a.day, a.type, a.cnt, a.first_seen, a.last_seen, a.sev, a.last_event, " \
               f"{', '.join('a.' + h for h in HOURS)}"
_RAW_COLUMNS = f"e.threat, e.day, e.type, 1, e.time, e.time, e.sev, e.id, {_HOUR_FLAGS}"
_ROW_NAMES = f"threat, day, type, cnt, first_seen, last_seen, sev, last_event, {', '.join(HOURS)}"


@dataclass(frozen=True)
class View:
    """What one request may see: a date range, a scope and a search."""

    day_from: str
    day_to: str
    scope: Scope
    query: Query

    def rows(self) -> tuple[str, list[object]]:
        """SQL yielding `_ROW_NAMES` columns for every visible (day, threat, type)."""
        d = [self.day_from, self.day_to]
        scope = self.scope
        if self.query.has_event_terms:
            where, params = self.event_filter()
            return f"SELECT {_RAW_COLUMNS} FROM events e WHERE {where}", params
        agg = f"SELECT {_AGG_COLUMNS} FROM agg a WHERE a.day BETWEEN ? AND ?"
        rows, rp = "".join(f" AND {x}" for x in self.query.row_sql), self.query.row_params
        agg += rows
        if scope.unrestricted:
            return agg, d + rp
        s, sp = scope.sql("t.src_key")
        es, esp = scope.sql("e.src_key")
        t, tp = scope.sql("e.dst_key", "e.dst_ip")
        # `+e.day`: let SQLite find the in-scope destinations through events_dst, not scan the days
        # a flood threat has no one source: its events from sources in scope come from `events`
        sql = (f"{agg} AND a.threat IN (SELECT t.id FROM threats t WHERE {s}) UNION ALL "
               f"SELECT {_RAW_COLUMNS} FROM events e WHERE +e.day BETWEEN ? AND ? AND NOT COALESCE({es}, 0) AND {t}"
               f"{rows} UNION ALL "
               f"SELECT {_RAW_COLUMNS} FROM events e WHERE e.threat IN (SELECT id FROM threats "
               f"WHERE sources IS NOT NULL) AND e.day BETWEEN ? AND ? AND COALESCE({es}, 0){rows}")
        return sql, d + rp + sp + d + esp + tp + rp + d + esp + rp

    def event_filter(self) -> tuple[str, list[object]]:
        """WHERE clause (alias `e`) of the matching events when the search has event terms."""
        q, scope = self.query, self.scope
        sql = "e.day BETWEEN ? AND ? AND " + " AND ".join(q.event_sql + q.row_sql)
        params: list[object] = [self.day_from, self.day_to, *q.event_params, *q.row_params]
        if not scope.unrestricted:
            s, sp = scope.sql("e.src_key")
            t, tp = scope.sql("e.dst_key", "e.dst_ip")
            sql += f" AND ({s} OR {t})"
            params += sp + tp
        return sql, params

    def filtered(self, grouped: list[tuple[int, int, int]] | None = None) -> tuple[str, list[object]]:
        """`WITH ... f AS (...)`: the visible threats after suppressions and threat-level terms.
        `grouped` ((threat, count, severity) already summed from the events) replaces the
        grouping pass; first/last seen and the latest event are then not filled in."""
        if grouped is None:
            rows, params = self.rows()
            head = (f"WITH rows({_ROW_NAMES}) AS ({rows}), "
                    "g AS (SELECT threat, sum(cnt) AS cnt, min(first_seen) AS first_seen, max(last_seen) AS last_seen, "
                    "max(sev) AS sev, max(last_event) AS last_event FROM rows GROUP BY threat), ")
        else:
            params = [json.dumps(grouped)]
            head = ("WITH g(threat, cnt, first_seen, last_seen, sev, last_event) AS (SELECT "
                    "json_extract(value, '$[0]'), json_extract(value, '$[1]'), 0, 0, json_extract(value, '$[2]'), 0 "
                    "FROM json_each(?)), ")
        where = [] if self.query.include_suppressed else [
            "NOT EXISTS (SELECT 1 FROM st.suppressions s WHERE (s.src_ip = '' OR s.src_ip = t.src_ip) "
            f"AND {trail_rule_sql('t.trail')})"]
        where += self.query.threat_sql
        sql = (head + "f AS (SELECT g.*, t.tid, t.src_ip, t.trail, t.src_key, t.sources, "
               "COALESCE(tr.status, 'new') AS status, "
               "COALESCE(tr.note, '') AS note, COALESCE(tr.tags, '') AS tags FROM g JOIN threats t ON t.id = g.threat "
               "LEFT JOIN st.triage tr ON tr.src_ip = t.src_ip AND tr.trail = t.trail"
               + (" WHERE " + " AND ".join(where) if where else "") + ") ")
        return sql, params + self.query.threat_params


def port_value(text: str | None) -> int | str | None:
    if not text:
        return None
    return int(text) if text.isdigit() and len(text) <= 5 else text


def event_json(row: tuple) -> dict[str, Any]:
    eid, t, sensor, src, sport, dst, dport, proto, type_, trail, info, ref, sev = row
    return {"id": eid, "time": t, "sensor": sensor, "src_ip": src, "src_port": port_value(sport), "dst_ip": dst,
            "dst_port": port_value(dport), "proto": proto, "type": type_, "trail": trail, "info": info,
            "reference": ref, "severity": NAMES.get(sev, "medium")}


def _threat_json(f: tuple, e: tuple, hourly: list[int]) -> dict[str, Any]:
    threat, tid, src, trail, cnt, first, last, sev, status, note = f
    ev = event_json(e)
    return {"id": tid, "src_ip": src, "dst_ip": ev["dst_ip"], "dst_port": ev["dst_port"], "proto": ev["proto"],
            "type": ev["type"], "trail": trail, "info": ev["info"], "reference": ev["reference"],
            "sensor": ev["sensor"], "count": cnt, "first_seen": first, "last_seen": last,
            "severity": NAMES.get(sev, "medium"), "hourly": hourly, "status": status, "note": note}


_F_COLUMNS = "f.threat, f.tid, f.src_ip, f.trail, f.cnt, f.first_seen, f.last_seen, f.sev, f.status, f.note, " \
             "f.last_event, f.tags, f.sources"


def threats(conn: sqlite3.Connection, view: View, sort: str, order: str, limit: int, offset: int,
            extra_where: str = "", extra_params: tuple = ()) -> tuple[int, list[dict[str, Any]]]:
    """(total, page of Threat dicts)."""
    head, params = view.filtered()
    o = "DESC" if order == "desc" else "ASC"
    order_by = SORTS[sort].format(o=o) + f", f.threat {o}"
    where = f" WHERE {extra_where}" if extra_where else ""
    if sort in EVENT_SORTS:
        sql = (f"{head}SELECT {_F_COLUMNS}, count(*) OVER () FROM f JOIN events e ON e.id = f.last_event{where} "
               f"ORDER BY {order_by} LIMIT ? OFFSET ?")
    else:
        sql = f"{head}SELECT {_F_COLUMNS}, count(*) OVER () FROM f{where} ORDER BY {order_by} LIMIT ? OFFSET ?"
    page = conn.execute(sql, [*params, *extra_params, limit, offset]).fetchall()
    if page:
        total = page[0][-1]
    else:
        total = conn.execute(f"{head}SELECT count(*) FROM f{where}", [*params, *extra_params]).fetchone()[0]
    if not page:
        return total, []
    ids = [r[0] for r in page]
    events: dict[int, tuple] = {}
    latest = [r[10] for r in page]
    for i in range(0, len(latest), IN_CHUNK):  # SQLite caps the number of bound parameters
        chunk = latest[i:i + IN_CHUNK]
        events.update((r[0], r) for r in conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events e WHERE e.id IN ({','.join('?' * len(chunk))})", chunk))
    hourly = _hourly(conn, view, ids)
    values = _values(conn, ids)
    sources = _sources(conn, [r[0] for r in page if r[12] is not None], view.scope)
    return total, [{**_threat_json(r[:10], events[r[10]], hourly.get(r[0], [0] * 24)), "values": values.get(r[0], []),
                    "tags": [t for t in r[11].split(",") if t], **_flood_json(r[0], r[12], sources)} for r in page]


def _flood_json(threat: int, stored: int | None, sources: dict[int, list[str]]) -> dict[str, Any]:
    """A flood threat (one trail, many sources): its distinct sources ("…" list, at most
    MAX_VALUES, those in the user's scope) and how many there are; any other threat has one."""
    if stored is None:
        return {"flood": False, "source_count": 1}
    listed = sources.get(threat, [])
    return {"flood": True, "source_count": len(listed), "sources": listed[:MAX_VALUES]}


def _sources(conn: sqlite3.Connection, ids: list[int], scope: Scope) -> dict[int, list[str]]:
    """The distinct sources of the given flood threats, in address order, within `scope`."""
    out: dict[int, list[str]] = {}
    where, params = ("", []) if scope.unrestricted else scope.sql("src_key")
    for i in range(0, len(ids), IN_CHUNK):
        chunk = ids[i:i + IN_CHUNK]
        sql = (f"SELECT threat, src_ip FROM threat_sources WHERE threat IN ({','.join('?' * len(chunk))})"
               + (f" AND {where}" if where else "") + " ORDER BY threat, src_key, src_ip")
        for threat, src in conn.execute(sql, [*chunk, *params]):
            out.setdefault(threat, []).append(src)
    return out


def _values(conn: sqlite3.Connection, ids: list[int]) -> dict[int, list[str]]:
    """The distinct raw trails of the given threats (Maltrail's "…" list)."""
    out: dict[int, list[str]] = {}
    for i in range(0, len(ids), IN_CHUNK):
        chunk = ids[i:i + IN_CHUNK]
        for threat, value in conn.execute(f"SELECT threat, value FROM threat_values WHERE threat IN "
                                          f"({','.join('?' * len(chunk))}) ORDER BY threat, value", chunk):
            out.setdefault(threat, []).append(value)
    return out


def _hourly(conn: sqlite3.Connection, view: View, ids: list[int]) -> dict[int, list[int]]:
    """Hourly profiles of the given threats (a page: filtered by id; an export: all at once)."""
    rows, params = view.rows()
    sums = ", ".join(f"sum({h})" for h in HOURS)
    if len(ids) > IN_CHUNK:
        sql = f"WITH rows({_ROW_NAMES}) AS ({rows}) SELECT threat, {sums} FROM rows GROUP BY threat"
        wanted = set(ids)
        return {r[0]: [int(v) for v in r[1:]] for r in conn.execute(sql, params) if r[0] in wanted}
    marks = ",".join("?" * len(ids))
    sql = (f"WITH rows({_ROW_NAMES}) AS ({rows}) SELECT threat, {sums} FROM rows WHERE threat IN ({marks}) "
           "GROUP BY threat")
    return {r[0]: [int(v) for v in r[1:]] for r in conn.execute(sql, [*params, *ids])}


def threat_by_tid(conn: sqlite3.Connection, tid: str) -> tuple[int, str, str] | None:
    row = conn.execute("SELECT id, src_ip, trail FROM threats WHERE tid = ?", (tid,)).fetchone()
    return (int(row[0]), row[1], row[2]) if row else None


def threat_events(conn: sqlite3.Connection, view: View, threat: int, limit: int) -> list[dict[str, Any]]:
    sql = f"SELECT {EVENT_COLUMNS} FROM events e WHERE e.threat = ? AND e.day BETWEEN ? AND ?"
    params: list[object] = [threat, view.day_from, view.day_to]
    if not view.scope.unrestricted:
        s, sp = view.scope.sql("e.src_key")
        t, tp = view.scope.sql("e.dst_key", "e.dst_ip")
        sql += f" AND ({s} OR {t})"
        params += sp + tp
    sql += " ORDER BY e.id DESC LIMIT ?"
    return [event_json(r) for r in conn.execute(sql, [*params, limit])]


def days(conn: sqlite3.Connection, view: View) -> list[dict[str, Any]]:
    rows, params = view.rows()
    sql = f"WITH rows({_ROW_NAMES}) AS ({rows}) SELECT day, sum(cnt) FROM rows GROUP BY day ORDER BY day"
    return [{"date": d, "events": int(n)} for d, n in conn.execute(sql, params)]


def stats(conn: sqlite3.Connection, view: View) -> dict[str, Any]:
    """Timeline, top lists and severity split of the visible threats. With event terms, one pass
    over the events gives both the per-hour counts and the per-threat sums the filters need."""
    per_hour: dict[tuple[str, str], list[int]] = {}
    if view.query.has_event_terms:
        where, where_params = view.event_filter()
        hours = conn.execute(f"SELECT e.threat, e.day, e.type, e.hour, count(*), max(e.sev) FROM events e "
                             f"WHERE {where} GROUP BY e.threat, e.day, e.type, e.hour", where_params).fetchall()
        sums: dict[int, list[int]] = {}
        for threat, _, _, _, n, sev in hours:
            total = sums.setdefault(threat, [0, 0])
            total[0] += n
            total[1] = max(total[1], sev)
        head, params = view.filtered([(t, c, s) for t, (c, s) in sums.items()])
    else:
        head, params = view.filtered()
    visible: set[int] = set()
    sources: dict[str, int] = {}
    trails: dict[str, int] = {}
    severity = {"high": 0, "medium": 0, "low": 0}
    for threat, src, trail, cnt, sev in conn.execute(f"{head}SELECT threat, src_ip, trail, cnt, sev FROM f", params):
        visible.add(threat)
        sources[src] = sources.get(src, 0) + cnt
        trails[trail] = trails.get(trail, 0) + cnt
        severity[NAMES.get(sev, "medium")] += 1
    if view.query.has_event_terms:
        for threat, day, type_, hour, n, _ in hours:
            if threat in visible:
                per_hour.setdefault((day, type_), [0] * 24)[hour] += n
    else:
        rows, row_params = view.rows()
        for threat, day, type_, *counts in conn.execute(
                f"WITH rows({_ROW_NAMES}) AS ({rows}) SELECT threat, day, type, "
                f"{', '.join(f'sum({h})' for h in HOURS)} FROM rows GROUP BY threat, day, type", row_params):
            if threat in visible:
                total = per_hour.setdefault((day, type_), [0] * 24)
                for h, n in enumerate(counts):
                    total[h] += n
    timeline = []
    for (day, type_), hours in per_hour.items():
        timeline += [{"time": hour_start(day, h), "type": type_, "count": int(n)} for h, n in enumerate(hours) if n]
    timeline.sort(key=lambda x: (x["time"], x["type"]))

    def top(counts: dict[str, int]) -> list[dict[str, Any]]:
        return [{"value": v, "count": n} for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]

    return {"timeline": timeline, "top_sources": top(sources), "top_trails": top(trails), "severity": severity}


def hour_start(day: str, hour: int) -> float:
    """Epoch of an hour of a server day (the timeline's buckets and the live deltas' key)."""
    y, m, d = (int(x) for x in day.split("-"))
    return time.mktime((y, m, d, hour, 0, 0, 0, 0, -1))


def live_rows(conn: sqlite3.Connection, after: int, limit: int, scope: Scope | None = None,
              upto: int | None = None) -> list[tuple[dict[str, Any], int]]:
    """Events after `after` (and up to `upto`), each with its threat's id, day and hour bucket,
    and the threat's row id."""
    sql = (f"SELECT {EVENT_COLUMNS}, t.tid, e.day, e.hour, e.threat FROM events e "
           "JOIN threats t ON t.id = e.threat WHERE e.id > ?")
    params: list[object] = [after]
    if upto is not None:
        sql += " AND e.id <= ?"
        params.append(upto)
    if scope is not None and not scope.unrestricted:
        s, sp = scope.sql("e.src_key")
        t, tp = scope.sql("e.dst_key", "e.dst_ip")
        sql += f" AND ({s} OR {t})"
        params += sp + tp
    sql += " ORDER BY e.id LIMIT ?"
    out = []
    for r in conn.execute(sql, [*params, limit]):
        event = event_json(r[:13])
        event.update(threat=r[13], day=r[14], hour=r[15], bucket=hour_start(r[14], r[15]))
        out.append((event, int(r[16])))
    return out


def last_threat_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(max(id), 0) FROM threats").fetchone()[0])


def _hunt_filter(scope: Scope, net: Network | None, text: str) -> tuple[str, list[object]]:
    """WHERE clause (alias `e`, without the days) of the events a hunted indicator matches: an
    address or CIDR in the source, the destination or an address trail (`1.2.3.4:80`,
    `[2001:db8::1]/x`); text as a case-insensitive substring of a field."""
    if net is not None:
        where = ("(e.src_key BETWEEN ? AND ? OR e.dst_key BETWEEN ? AND ? "
                 "OR (e.src_key IS NULL AND mt_in_range(e.src_ip, ?, ?)) "
                 "OR (e.dst_key IS NULL AND mt_in_range(e.dst_ip, ?, ?)) "
                 "OR ((e.trail GLOB '[0-9[]*' OR instr(e.trail, ':') > 0) AND mt_trail_in_range(e.trail, ?, ?)))")
        params: list[object] = [net.lo, net.hi] * 5
    else:
        columns = ("e.src_ip", "e.src_port", "e.dst_ip", "e.dst_port", "e.trail", "e.info", "e.reference",
                   "e.sensor", "e.type", "e.proto")
        where = "(" + " OR ".join(f"instr(lower({c}), ?) > 0" for c in columns) + ")"
        params = [text.lower()] * len(columns)
    if not scope.unrestricted:
        s, sp = scope.sql("e.src_key")
        t, tp = scope.sql("e.dst_key", "e.dst_ip")
        where += f" AND ({s} OR {t})"
        params += sp + tp
    return where, params


def hunt_events(conn: sqlite3.Connection, scope: Scope, day_from: str, day_to: str, net: Network | None,
                text: str, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
    """(total, a page of events newest first) matching a hunted indicator, from the index."""
    where, params = _hunt_filter(scope, net, text)
    sql = f"FROM events e WHERE e.day BETWEEN ? AND ? AND {where}"
    params = [day_from, day_to, *params]
    total = int(conn.execute(f"SELECT count(*) {sql}", params).fetchone()[0])
    rows = conn.execute(f"SELECT {EVENT_COLUMNS} {sql} ORDER BY e.id DESC LIMIT ? OFFSET ?", [*params, limit, offset])
    return total, [event_json(r) for r in rows]


def hunt_days(conn: sqlite3.Connection, day_from: str, day_to: str) -> list[str]:
    """The days the index has read log files of, newest first (a day without hits is listed too)."""
    return [d for (d,) in conn.execute("SELECT DISTINCT day FROM files WHERE day BETWEEN ? AND ? ORDER BY day DESC",
                                       (day_from, day_to))]


def hunt_day(conn: sqlite3.Connection, scope: Scope, day: str, net: Network | None, text: str,
             samples: int) -> tuple[int, list[dict[str, Any]]]:
    """(hits, the first `samples` of them in log order) of a hunted indicator on one day."""
    where, params = _hunt_filter(scope, net, text)
    sql = f"FROM events e WHERE e.day = ? AND {where}"
    hits = int(conn.execute(f"SELECT count(*) {sql}", [day, *params]).fetchone()[0])
    rows = conn.execute(f"SELECT {EVENT_COLUMNS} {sql} ORDER BY e.id LIMIT ?", [day, *params, samples]) if samples \
        else []
    return hits, [event_json(r) for r in rows]


def last_event_id(conn: sqlite3.Connection, scope: Scope | None = None) -> int:
    """The newest event (0: none); with a scope, the newest one that scope sees (as `View.rows`
    counts them: the threat's source or the event's destination in scope), found from `agg` and
    the destination index, never by scanning events."""
    if scope is None or scope.unrestricted:
        return int(conn.execute("SELECT COALESCE(max(id), 0) FROM events").fetchone()[0])
    s, sp = scope.sql("t.src_key")
    t, tp = scope.sql("e.dst_key", "e.dst_ip")
    sql = (f"SELECT COALESCE(max(m), 0) FROM (SELECT max(a.last_event) AS m FROM agg a WHERE a.threat IN "
           f"(SELECT t.id FROM threats t WHERE {s}) UNION ALL SELECT max(e.id) FROM events e WHERE {t})")
    return int(conn.execute(sql, sp + tp).fetchone()[0])


def triage_history(conn: sqlite3.Connection, src_ip: str, trail: str) -> list[dict[str, Any]]:
    """Every triage change of a threat, newest first. A flood threat's history also holds the
    changes made to its trail's per-source threats before they were merged into it."""
    return [{"at": at, "user": u, "status": st, "note": n, "tags": [t for t in tags.split(",") if t]}
            for at, u, st, n, tags in conn.execute(
                "SELECT at, user, status, note, tags FROM st.triage_log WHERE trail = ? AND (src_ip = ? OR (? = '' "
                "AND EXISTS (SELECT 1 FROM threats WHERE src_ip = '' AND trail = ? AND sources IS NOT NULL))) "
                "ORDER BY id DESC", (trail, src_ip, src_ip, trail))]


def views(conn: sqlite3.Connection, user: str) -> list[dict[str, Any]]:
    """A user's saved views, by name."""
    return [{"id": i, "name": n, "q": q, "from": f, "to": t, "days": d or None, "created": c}
            for i, n, q, f, t, d, c in conn.execute(
                "SELECT id, name, q, day_from, day_to, days, created FROM st.views WHERE user = ? "
                "ORDER BY name COLLATE NOCASE", (user,))]


def suppressions(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [{"id": i, "scope": sc, "src_ip": s, "trail": t, "note": n, "user": u, "created": c}
            for i, sc, s, t, n, u, c in conn.execute(
                "SELECT id, scope, src_ip, trail, note, user, created FROM st.suppressions ORDER BY id")]
