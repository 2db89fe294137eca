"""JSON API handlers (contract: docs/WEBUI.md). Parameters are validated here and refused with a
400 naming the parameter; database work runs in the reader threads, never on the event loop."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import math
import re
import time
from typing import Any

from aiohttp import web

from webui import queries as Q
from webui.app import COOKIE, SESSION, USER, Context, client_address, ctx_of, json_error
from webui.auth import MAX_PASSWORD, Session, User, client_bucket, scope_of, verify
from webui.eventids import EventIds
from webui.grouping import normalize_trail
from webui.hunt import HuntError, check_indicator, hunt
from webui.netaddr import Network, ip_key
from webui.openapi import spec
from webui.search import STATUSES, Query, SearchError, compile_query
from webui.sensors import last_events, sensor_rows
from webui.status import engine_status
from webui.store import QueryTooLong
from webui.timezone import day_axis, server_tz

MAX_DAYS = 366
DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
EXPORT_MAX = 100_000
MAX_NOTE = 2000
MAX_TAG = 24
MAX_TAGS = 10
MAX_VIEWS = 100
MAX_INDICATOR = 256
MAX_SUPPRESSIONS = 10_000
MAX_LOGINS_IN_FLIGHT = 8


class BadRequest(Exception):
    """Becomes a 400 with this message."""


def _date(request: web.Request, name: str, default: dt.date) -> dt.date:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not DATE.match(text):
        raise BadRequest(f"{name}: expected a date YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name}: {text} is not a valid date") from None


def date_range(request: web.Request) -> tuple[str, str]:
    today = dt.date.today()
    start = _date(request, "from", today)
    end = _date(request, "to", start if request.query.get("from") else today)
    if end < start:
        raise BadRequest("from: must not be after to")
    if (end - start).days + 1 > MAX_DAYS:
        raise BadRequest(f"from/to: at most {MAX_DAYS} days at once")
    return start.isoformat(), end.isoformat()


def int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not re.fullmatch(r"\d{1,9}", text):
        raise BadRequest(f"{name}: expected a whole number {lo}..{hi}")
    value = int(text)
    if not lo <= value <= hi:
        raise BadRequest(f"{name}: {value} is out of range ({lo}..{hi})")
    return value


def choice_param(request: web.Request, name: str, default: str, allowed: tuple[str, ...] | dict) -> str:
    value = request.query.get(name) or default
    if value not in allowed:
        raise BadRequest(f"{name}: expected one of {', '.join(allowed)}")
    return value


def view_of(request: web.Request, with_query: bool = True) -> Q.View:
    day_from, day_to = date_range(request)
    try:
        query = compile_query(request.query.get("q", "") if with_query else "")
    except SearchError as exc:
        raise BadRequest(f"q: {exc}") from None
    return Q.View(day_from, day_to, scope_of(request[USER]), query)


def _request_key(request: web.Request) -> tuple:
    """What makes two reads the same: path, parameters and the user's scope."""
    return request.path, tuple(sorted(request.query.items())), scope_of(request[USER]).cache_key


def handle(fn: Any) -> Any:
    """BadRequest (and a query past its time limit) -> 400 JSON."""
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except BadRequest as exc:
            return json_error(400, str(exc))
        except QueryTooLong:
            return json_error(400, "this query takes too long: narrow the date range or the search")
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise BadRequest("expected a JSON body (Content-Type: application/json)")
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body: invalid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body: expected a JSON object")
    return body


def _text_field(body: dict[str, Any], name: str, limit: int, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str):
        raise BadRequest(f"{name}: expected a string")
    if len(value) > limit:
        raise BadRequest(f"{name}: at most {limit} characters")
    if any(ord(c) < 32 and c not in "\n\t" for c in value):
        raise BadRequest(f"{name}: control characters are not allowed")
    return value


def _session_json(session: Session, user: User, pivots: list[dict[str, Any]]) -> dict[str, Any]:
    """Who is logged in, the server's clock (its time zone and today's date: the days of the
    logs, the date picker and the charts are the server's days) and the configured pivot links."""
    return {"user": user.name, "csrf": session.csrf, "scope": user.scope, "admin": user.admin, "role": user.role,
            "tz": server_tz(), "today": dt.date.today().isoformat(), "pivots": pivots}


# --- session -----------------------------------------------------------------------------------

@handle
async def login(request: web.Request) -> web.Response:
    """POST only (405 otherwise): credentials never travel in a URL."""
    ctx = ctx_of(request)
    client = client_address(request)
    bucket = client_bucket(client)
    body = await _json_body(request)
    name = body.get("username")
    password = body.get("password")
    if not isinstance(name, str) or not isinstance(password, str) or len(password) > MAX_PASSWORD:
        raise BadRequest("username and password: expected strings")
    wait = ctx.throttle.retry_after(bucket, name)
    if wait > 0:
        if ctx.throttle.refused(bucket, name) == 0:
            ctx.audit.write("login-throttled", name, client, f"retry_after={math.ceil(wait)}")
        seconds = math.ceil(wait)
        return json_error(429, "too many failed logins; try again later", {"Retry-After": str(seconds)},
                          retry_after=seconds)
    # One attempt at a time per (client, account) (parallel guesses would all pass the throttle
    # check before the first failure is counted), and a bounded number in total (scrypt is costly).
    slot = f"{bucket}|{name[:64].lower()}"
    if ctx.logins_in_flight.get(slot) or sum(ctx.logins_in_flight.values()) >= MAX_LOGINS_IN_FLIGHT:
        return json_error(429, "another login attempt is in progress; try again", {"Retry-After": "1"},
                          retry_after=1)
    ctx.logins_in_flight[slot] = 1
    try:
        user = await asyncio.get_running_loop().run_in_executor(ctx.login_pool, verify, ctx.users, name, password)
    finally:
        ctx.logins_in_flight.pop(slot, None)
    if user is None:
        ctx.throttle.failure(bucket, name)
        ctx.audit.write("login-failed", name, client)
        return json_error(401, "wrong user name or password")
    ctx.throttle.success(bucket, name)
    old = request.cookies.get(COOKIE)
    if old:
        ctx.sessions.delete(old)  # no session fixation: always a fresh token
    session = ctx.sessions.create(user.name)
    ctx.audit.write("login-ok", user.name, client)
    resp = web.json_response(_session_json(session, user, ctx.settings.pivot_links))
    resp.set_cookie(COOKIE, session.token, httponly=True, samesite="Strict", path="/", secure=ctx.settings.tls)
    return resp


async def session_info(request: web.Request) -> web.Response:
    return web.json_response(_session_json(request[SESSION], request[USER], ctx_of(request).settings.pivot_links))


async def logout(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    ctx.sessions.delete(request[SESSION].token)
    ctx.audit.write("logout", request[USER].name, client_address(request))
    resp = web.json_response({"ok": True})
    resp.del_cookie(COOKIE, path="/")
    return resp


# --- threats and events --------------------------------------------------------------------------

@handle
async def threats(request: web.Request) -> web.Response:
    view = view_of(request)
    sort = choice_param(request, "sort", "last_seen", Q.SORTS)
    order = choice_param(request, "order", "desc", ("asc", "desc"))
    page = int_param(request, "page", 1, 1, 1_000_000)
    per_page = int_param(request, "per_page", 50, 1, 500)
    ctx = ctx_of(request)

    def run() -> tuple[int, tuple[int, list[dict[str, Any]]]]:
        with ctx.readers.snapshot() as conn:
            return (Q.last_event_id(conn, view.scope),
                    Q.threats(conn, view, sort, order, per_page, (page - 1) * per_page))

    partial = ctx.partial()  # taken before the read: the answer is partial if the index was
    as_of, (total, rows) = await ctx.shared_read(_request_key(request), run)
    return web.json_response({"total": total, "page": page, "per_page": per_page, "rows": rows, **partial,
                              "as_of": _as_of(ctx, view, as_of)})


def _as_of(ctx: Context, view: Q.View, last_event: int) -> int | str:
    """The last event an answer includes, so a live page applies only later events to it. For a
    scoped user, the last event in its scope as the opaque id its live stream uses ("" for none):
    the page finds it in its stream, and the global count stays hidden."""
    if view.scope.unrestricted:
        return last_event
    return EventIds(ctx.secret).encode(last_event) if last_event else ""


async def _visible_threat(ctx: Context, view: Q.View, tid: str) -> tuple[int, dict[str, Any]] | None:
    """The threat as this user sees it in the view (suppressed ones included), or None."""
    if not re.fullmatch(r"[0-9a-f]{16}", tid):
        return None

    def run() -> tuple[int, dict[str, Any]] | None:
        with ctx.readers.snapshot() as conn:
            found = Q.threat_by_tid(conn, tid)
            if found is None:
                return None
            everything = Q.View(view.day_from, view.day_to, view.scope, Query(include_suppressed=True))
            _, rows = Q.threats(conn, everything, "last_seen", "desc", 1, 0, "f.threat = ?", (found[0],))
            return (found[0], rows[0]) if rows else None

    return await ctx.read(run)


@handle
async def threat_events(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    view = view_of(request, with_query=False)
    limit = int_param(request, "limit", 200, 1, 1000)
    found = await _visible_threat(ctx, view, request.match_info["tid"])
    if found is None:
        return json_error(404, "no such threat in this range")
    threat, row = found

    def run() -> list[dict[str, Any]]:
        with ctx.readers.snapshot() as conn:
            return Q.threat_events(conn, view, threat, limit)

    events = await ctx.read(run)
    if not view.scope.unrestricted:  # global ids would tell a scoped user how many events there are
        ids = EventIds(ctx.secret)
        events = [{**e, "id": ids.encode(e["id"])} for e in events]
    return web.json_response({"threat": row, "events": events})


@handle
async def days(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    view = view_of(request, with_query=False)

    def run() -> list[dict[str, Any]]:
        with ctx.readers.snapshot() as conn:
            return Q.days(conn, view)

    partial = ctx.partial()
    return web.json_response({"days": await ctx.read(run), **partial})


@handle
async def stats(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    view = view_of(request)

    def run() -> tuple[int, dict[str, Any]]:
        with ctx.readers.snapshot() as conn:
            return Q.last_event_id(conn, view.scope), Q.stats(conn, view)

    partial = ctx.partial()
    as_of, result = await ctx.shared_read(_request_key(request), run)
    return web.json_response({**result, "axis": day_axis(view.day_from, view.day_to), **partial,
                              "as_of": _as_of(ctx, view, as_of)})


# --- indicators ----------------------------------------------------------------------------------

@handle
async def check(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    indicator = request.query.get("indicator", "")
    if not indicator.strip() or len(indicator) > MAX_INDICATOR:
        raise BadRequest(f"indicator: give 1..{MAX_INDICATOR} characters")
    if ctx.trail_index is None:
        return web.json_response({"indicator": indicator, "found": False, "matches": [],
                                  "error": ctx.trail_error or "trail index loading"})
    index = ctx.trail_index
    result = await ctx.read(index.check, indicator)
    matches = [{"trail": result.trail, "info": result.info, "reference": result.reference}] if result.found else []
    about = {"generation": ctx.trail_generation, "built_at": index.meta.get("built_at"),
             "trails": index.meta.get("counts", {}).get("entries"), "reload_error": ctx.trail_error or None}
    return web.json_response({"indicator": indicator, "found": result.found, "matches": matches, "index": about})


@handle
async def hunt_handler(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    indicator = request.query.get("indicator", "")
    budget_text = request.query.get("budget")
    budget = ctx.settings.hunt_budget_seconds
    if budget_text:
        try:
            budget = float(budget_text)
        except ValueError:
            raise BadRequest("budget: expected seconds") from None
        if not math.isfinite(budget) or budget <= 0:
            raise BadRequest("budget: expected a positive number of seconds")
        budget = min(budget, ctx.settings.hunt_budget_seconds)
    day_from = day_to = None
    if request.query.get("from") or request.query.get("to"):
        day_from, day_to = date_range(request)
    partial = ctx.partial()
    try:
        result = await asyncio.get_running_loop().run_in_executor(
            ctx.hunt_pool, hunt, ctx.readers, indicator, budget, scope_of(request[USER]), day_from, day_to,
            lambda: ctx.closing)
    except HuntError as exc:
        raise BadRequest(f"indicator: {exc}") from None
    if partial:
        result["complete"] = False
    return web.json_response({**result, **partial})


def _hunted(request: web.Request) -> tuple[Network | None, str, str, str]:
    """(network or None, text, first day, last day) of a hunt over the index; all days by default."""
    indicator = request.query.get("indicator", "").strip()
    try:
        net = check_indicator(indicator)
    except HuntError as exc:
        raise BadRequest(f"indicator: {exc}") from None
    day_from, day_to = ("0000-01-01", "9999-12-31")
    if request.query.get("from") or request.query.get("to"):
        day_from, day_to = date_range(request)
    return net, indicator, day_from, day_to


@handle
async def hunt_events(request: web.Request) -> web.Response:
    """Every event matching the hunted indicator, paged, newest first (the index, whole)."""
    ctx = ctx_of(request)
    net, text, day_from, day_to = _hunted(request)
    page = int_param(request, "page", 1, 1, 1_000_000)
    per_page = int_param(request, "per_page", 100, 1, 500)
    scope = scope_of(request[USER])

    def run() -> tuple[int, list[dict[str, Any]]]:
        with ctx.readers.snapshot() as conn:
            return Q.hunt_events(conn, scope, day_from, day_to, net, text, per_page, (page - 1) * per_page)

    partial = ctx.partial()
    total, events = await ctx.read(run)
    if not scope.unrestricted:
        ids = EventIds(ctx.secret)
        events = [{**e, "id": ids.encode(e["id"])} for e in events]
    return web.json_response({"indicator": text, "kind": "network" if net else "text", "total": total,
                              "page": page, "per_page": per_page, "events": events, **partial})


EVENT_CSV = ("time", "sensor", "src_ip", "src_port", "dst_ip", "dst_port", "proto", "type", "trail", "info",
             "reference", "severity")


@handle
async def hunt_export(request: web.Request) -> web.Response:
    """The hunted events as CSV or JSON (at most EXPORT_MAX, newest first)."""
    ctx = ctx_of(request)
    fmt = choice_param(request, "format", "csv", ("csv", "json"))
    net, text, day_from, day_to = _hunted(request)
    scope = scope_of(request[USER])

    def run() -> tuple[int, list[dict[str, Any]]]:
        with ctx.readers.snapshot() as conn:
            return Q.hunt_events(conn, scope, day_from, day_to, net, text, EXPORT_MAX, 0)

    total, events = await ctx.read(run)
    name = "maltrail-hunt-" + re.sub(r"[^A-Za-z0-9.-]+", "_", text)[:60]
    if fmt == "json":
        body = json.dumps({"indicator": text, "total": total,
                           "events": [{k: e[k] for k in EVENT_CSV} for e in events]}).encode()
        return _download(body, "application/json", f"{name}.json")
    rows = [[csv_cell(_iso(e["time"]) if k == "time" else e[k]) for k in EVENT_CSV] for e in events]
    return _download(_csv_bytes(EVENT_CSV, rows), "text/csv; charset=utf-8", f"{name}.csv")


def _csv_bytes(header: tuple[str, ...], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def _download(body: bytes, ctype: str, filename: str) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": ctype,
                                            "Content-Disposition": f'attachment; filename="{filename}"'})


async def sensors(request: web.Request) -> web.Response:
    """Every sensor the server has a status file for. Figures are global: a scoped user gets only
    the names and whether they run."""
    ctx = ctx_of(request)
    rows = await ctx.read(sensor_rows, ctx.settings.status_file, ctx.status_memory)
    if not scope_of(request[USER]).unrestricted:
        return web.json_response({"sensors": [{"sensor": r["sensor"], "running": r["running"]} for r in rows],
                                  "scoped": True})

    def run() -> dict[str, float]:
        with ctx.readers.snapshot() as conn:
            return last_events(conn, [r["sensor"] for r in rows if r.get("sensor")])

    latest = await ctx.read(run)
    return web.json_response({"sensors": [{**r, "last_event": latest.get(r["sensor"])} for r in rows]})


async def status(request: web.Request) -> web.Response:
    """A scoped user gets whether the engine runs and the index is complete, never the global
    counters or the global number of events. A bearer token with the `status` scope (no session:
    monitoring, set up by an admin) gets the whole status."""
    ctx = ctx_of(request)
    data = await ctx.read(engine_status, ctx.settings.status_file, ctx.status_memory)
    user = request.get(USER)
    if user is not None and not scope_of(user).unrestricted:
        return web.json_response({"running": data.get("running", False), "updated": data.get("updated"),
                                  "scoped": True, "index": {"caught_up": ctx.caught_up, **ctx.partial()}})

    def index_info() -> dict[str, Any]:
        with ctx.readers.snapshot() as conn:
            return {"events": Q.last_event_id(conn), "caught_up": ctx.caught_up, **ctx.partial()}

    data["index"] = await ctx.read(index_info)
    return web.json_response(data)


# --- export --------------------------------------------------------------------------------------

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = ("id", "severity", "status", "count", "first_seen", "last_seen", "src_ip", "dst_ip", "dst_port",
               "proto", "type", "trail", "info", "reference", "sensor", "note", "tags", "values")


def csv_cell(value: Any) -> str:
    """Spreadsheet formula injection: a text cell never starts with = + - @ tab or CR. A list
    (tags, distinct trails) is one cell, its items separated by ` | `."""
    text = "" if value is None else " | ".join(map(str, value)) if isinstance(value, list) else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def defang(text: str) -> str:
    out = re.sub(r"(?i)^http", "hxxp", text).replace("://", "[://]")
    return out.replace(".", "[.]")


@handle
async def export(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    fmt = choice_param(request, "format", "csv", ("csv", "json", "defanged"))
    view = view_of(request)
    sort = choice_param(request, "sort", "last_seen", Q.SORTS)
    order = choice_param(request, "order", "desc", ("asc", "desc"))

    def run() -> tuple[int, list[dict[str, Any]]]:
        with ctx.readers.snapshot() as conn:
            return Q.threats(conn, view, sort, order, EXPORT_MAX, 0)

    total, rows = await ctx.read(run)
    name = f"maltrail-threats-{view.day_from}_{view.day_to}"
    if fmt == "json":
        body = json.dumps({"from": view.day_from, "to": view.day_to, "total": total, "rows": rows,
                           **ctx.partial()}).encode()
        ctype, ext = "application/json", "json"
    elif fmt == "csv":
        body = _csv_bytes(CSV_COLUMNS, [[csv_cell(_iso(r[c]) if c in ("first_seen", "last_seen") else r[c])
                                         for c in CSV_COLUMNS] for r in rows])
        ctype, ext = "text/csv; charset=utf-8", "csv"
    else:
        seen: dict[str, None] = {}
        for r in rows:
            seen.setdefault(r["trail"], None)
        body = "".join(defang(t) + "\n" for t in seen if t).encode()
        ctype, ext = "text/plain; charset=utf-8", "txt"
    return _download(body, ctype, f"{name}.{ext}")


# --- shared triage -------------------------------------------------------------------------------

@handle
async def triage(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    body = await _json_body(request)
    status_value = body.get("status", "new")
    if status_value not in STATUSES:
        raise BadRequest(f"status: expected one of {', '.join(STATUSES)}")
    note = _text_field(body, "note", MAX_NOTE, "")
    tags = _tags(body.get("tags")) if "tags" in body else None
    found = await _triaged_threat(request)
    if found is None:
        return json_error(404, "no such threat")
    view, row = found
    user = request[USER]
    tag_text = ",".join(tags if tags is not None else row["tags"])
    await ctx.write(ctx.ingester.set_triage, row["src_ip"], row["trail"], status_value, note, tag_text, user.name,
                    time.time())
    ctx.changed()
    ctx.audit.write("triage", user.name, client_address(request),
                    f"threat={row['id']} status={status_value} tags={tag_text}")
    again = await _visible_threat(ctx, view, row["id"])
    return web.json_response(again[1] if again else row)


def _tags(value: Any) -> list[str]:
    """Maltrail's free-text tags: up to MAX_TAGS, each 1..24 characters without commas."""
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise BadRequest("tags: expected a list of strings")
    out: list[str] = []
    for raw in value:
        tag = raw.strip()
        if not tag:
            continue
        if len(tag) > MAX_TAG or "," in tag or any(ord(c) < 32 for c in tag):
            raise BadRequest(f"tags: {tag[:30]!r}: use 1-{MAX_TAG} characters, no commas")
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise BadRequest(f"tags: at most {MAX_TAGS}")
    return out


async def _triaged_threat(request: web.Request) -> tuple[Q.View, dict[str, Any]] | None:
    """The threat of the path over every day it has events, as this user sees it (None: 404)."""
    ctx = ctx_of(request)
    tid = request.match_info["tid"]
    if not re.fullmatch(r"[0-9a-f]{16}", tid):
        return None

    def span() -> tuple[str, str] | None:
        with ctx.readers.snapshot() as conn:
            found = Q.threat_by_tid(conn, tid)
            if found is None:
                return None
            row = conn.execute("SELECT min(day), max(day) FROM agg WHERE threat = ?", (found[0],)).fetchone()
            return (row[0], row[1]) if row[0] else None

    bounds = await ctx.read(span)
    if bounds is None:
        return None
    view = Q.View(bounds[0], bounds[1], scope_of(request[USER]), compile_query(""))
    found = await _visible_threat(ctx, view, tid)
    return (view, found[1]) if found else None


async def triage_history(request: web.Request) -> web.Response:
    """Who changed the threat's triage, what and when (newest first)."""
    ctx = ctx_of(request)
    found = await _triaged_threat(request)
    if found is None:
        return json_error(404, "no such threat")
    row = found[1]

    def run() -> list[dict[str, Any]]:
        with ctx.readers.snapshot() as conn:
            return Q.triage_history(conn, row["src_ip"], row["trail"])

    return web.json_response({"threat": row["id"], "history": await ctx.read(run)})


def _rule_visible(rule: dict[str, Any], user: User) -> bool:
    scope = scope_of(user)
    return scope.unrestricted or rule["scope"] == "trail" or scope.contains_text(rule["src_ip"])


async def suppressions_list(request: web.Request) -> web.Response:
    ctx = ctx_of(request)

    def run() -> list[dict[str, Any]]:
        with ctx.readers.snapshot() as conn:
            return Q.suppressions(conn)

    user = request[USER]
    return web.json_response({"rules": [r for r in await ctx.read(run) if _rule_visible(r, user)]})


@handle
async def suppressions_add(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    body = await _json_body(request)
    scope_kind = body.get("scope")
    if scope_kind not in ("source", "trail", "both"):
        raise BadRequest("scope: expected source, trail or both")
    src = _text_field(body, "src_ip", 64, "") if scope_kind != "trail" else ""
    trail = normalize_trail(_text_field(body, "trail", 1024, "").strip()) if scope_kind != "source" else ""
    note = _text_field(body, "note", MAX_NOTE, "")
    if scope_kind != "trail" and ip_key(src) is None:
        raise BadRequest("src_ip: expected an IP address")
    if scope_kind != "source" and not trail.strip():
        raise BadRequest("trail: required for this scope")
    user = request[USER]
    user_scope = scope_of(user)
    if not user_scope.unrestricted and (scope_kind == "trail" or not user_scope.contains_text(src)):
        return json_error(403, "a scoped user can only suppress sources inside their scope")

    def count() -> int:
        with ctx.readers.snapshot() as conn:
            return int(conn.execute("SELECT count(*) FROM st.suppressions").fetchone()[0])

    if await ctx.read(count) >= MAX_SUPPRESSIONS:
        return json_error(409, f"at most {MAX_SUPPRESSIONS} suppression rules")
    now = time.time()
    rule_id = await ctx.write(ctx.ingester.add_suppression, scope_kind, src, trail, note, user.name, now)
    ctx.changed()
    ctx.audit.write("suppress", user.name, client_address(request),
                    f"rule={rule_id} scope={scope_kind} src={src} trail={trail}")
    return web.json_response({"id": rule_id, "scope": scope_kind, "src_ip": src, "trail": trail, "note": note,
                              "user": user.name, "created": now})


async def suppressions_delete(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    text = request.match_info["rid"]
    if not re.fullmatch(r"\d{1,12}", text):
        return json_error(404, "no such rule")

    def get() -> dict[str, Any] | None:
        with ctx.readers.snapshot() as conn:
            return next((r for r in Q.suppressions(conn) if r["id"] == int(text)), None)

    rule = await ctx.read(get)
    user = request[USER]
    if rule is None or not _rule_visible(rule, user):
        return json_error(404, "no such rule")
    if not scope_of(user).unrestricted and rule["scope"] == "trail":
        return json_error(403, "a scoped user cannot remove trail-wide rules")
    if not user.admin and rule["user"] != user.name:
        return json_error(403, "only an admin removes another user's rule")
    await ctx.write(ctx.ingester.delete_suppression, int(text))
    ctx.changed()
    ctx.audit.write("unsuppress", user.name, client_address(request),
                    f"rule={text} scope={rule['scope']} src={rule['src_ip']} trail={rule['trail']}")
    return web.json_response({"ok": True})


async def views_list(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    name = request[USER].name

    def run() -> list[dict[str, Any]]:
        with ctx.readers.snapshot() as conn:
            return Q.views(conn, name)

    return web.json_response({"views": await ctx.read(run)})


@handle
async def views_save(request: web.Request) -> web.Response:
    """A named search + range for this user: `days` (a rolling range ending today) or from/to."""
    ctx = ctx_of(request)
    body = await _json_body(request)
    name = _text_field(body, "name", 60).strip()
    if not name:
        raise BadRequest("name: required")
    q = _text_field(body, "q", 1024, "")
    try:
        compile_query(q)
    except SearchError as exc:
        raise BadRequest(f"q: {exc}") from None
    days = body.get("days")
    if days is not None and (not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DAYS):
        raise BadRequest(f"days: expected 1..{MAX_DAYS}")
    day_from = day_to = ""
    if days is None:
        for key in ("from", "to"):
            value = body.get(key)
            if not isinstance(value, str) or not DATE.match(value):
                raise BadRequest(f"{key}: expected a date YYYY-MM-DD (or give days)")
        day_from, day_to = body["from"], body["to"]
        if day_to < day_from:
            raise BadRequest("from: must not be after to")
    user = request[USER].name

    def count() -> int:
        with ctx.readers.snapshot() as conn:
            return len(Q.views(conn, user))

    if await ctx.read(count) >= MAX_VIEWS:
        return json_error(409, f"at most {MAX_VIEWS} saved views")
    view_id = await ctx.write(ctx.ingester.save_view, user, name, q, day_from, day_to, days or 0, time.time())
    return web.json_response({"id": view_id, "name": name, "q": q, "from": day_from, "to": day_to, "days": days})


async def views_delete(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    text = request.match_info["vid"]
    if not re.fullmatch(r"\d{1,12}", text) or not await ctx.write(ctx.ingester.delete_view, request[USER].name,
                                                                   int(text)):
        return json_error(404, "no such view")
    return web.json_response({"ok": True})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(spec())


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/login", login)
    r.add_get("/api/session", session_info)
    r.add_post("/api/logout", logout)
    r.add_get("/api/threats", threats)
    r.add_get("/api/threats/{tid}/events", threat_events)
    r.add_get("/api/days", days)
    r.add_get("/api/stats", stats)
    r.add_get("/api/check", check)
    r.add_get("/api/hunt", hunt_handler)
    r.add_get("/api/hunt/events", hunt_events)
    r.add_get("/api/hunt/export", hunt_export)
    r.add_get("/api/status", status)
    r.add_get("/api/sensors", sensors)
    r.add_get("/api/export", export)
    r.add_post("/api/triage/{tid}", triage)
    r.add_get("/api/threats/{tid}/history", triage_history)
    r.add_get("/api/suppressions", suppressions_list)
    r.add_post("/api/suppressions", suppressions_add)
    r.add_delete("/api/suppressions/{rid}", suppressions_delete)
    r.add_get("/api/views", views_list)
    r.add_post("/api/views", views_save)
    r.add_delete("/api/views/{vid}", views_delete)
    r.add_get("/api/openapi.json", openapi)
