"""Live events over Server-Sent Events, resumable by event id, at a cost independent of the
number of open streams.

One `LiveHub` per server follows the index: after each ingest round it reads the new events
once (one query, whatever the number of tabs), serialises each once, and keeps the latest ones
in a bounded buffer; with no stream open it only notes where the index ends. Every stream is
served from that buffer and only applies its user's scope in memory; a stream that resumes from
further back than the buffer reads its gap from the index once, then joins the buffer.

Each event goes out as `id: <event id>` / `event: event` / `data: <Event JSON>`, the Event with
`threat` (the id of its threat), `new_threat` (the event opened that threat) and `bucket` (the
start of its hour on the server's clock, the timeline's key), so a page updates its rows and
charts from the delta without asking for the whole day again. A scoped user's ids are opaque
(`webui.eventids`): they resume exactly but tell nothing about the global number of events.
A fresh scoped stream first sends `event: mark` with the opaque id of the last event in its scope
(the answers' `as_of` for that user), so the page can tell which events an answer counts.
`: ping` every 15 s; the stream ends as soon as the session is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from webui import queries as Q
from webui.app import COOKIE, USER, Context, ctx_of, json_error
from webui.auth import scope_of
from webui.eventids import EventIds
from webui.netaddr import Scope

log = logging.getLogger("maltrail.webui")
PING_SECONDS = 15.0
BATCH = 2000
BUFFER = 20_000
PER_USER = 8  # one analyst cannot hold every stream


@dataclass
class Item:
    """One buffered event: its id, the addresses the scope test needs, and its JSON once."""

    id: int
    src: str
    dst: str
    event: dict[str, Any]
    text: str = ""


@dataclass
class LiveHub:
    """The single follower of the index for every live stream."""

    ctx: Context
    last: int = -1  # id of the newest event read; -1 before the first read
    base: int = 0  # the buffer holds every event with an id above this one
    max_threat: int = 0
    items: deque[Item] = field(default_factory=lambda: deque(maxlen=BUFFER))
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        def head() -> tuple[int, int]:
            with self.ctx.readers.snapshot() as conn:
                return Q.last_event_id(conn), Q.last_threat_id(conn)

        self.last, self.max_threat = await self.ctx.read(head)
        self.base = self.last

    async def run(self) -> None:
        """Wake on every ingest round that added events; read them once; wake the streams."""
        if self.last < 0:
            await self.start()
        while not self.ctx.closing:
            tick = self.ctx.tick
            try:
                await self._pull()
            except Exception:  # e.g. a query past its time limit: the streams wait for the next round
                log.exception("reading new events for the live streams failed; retrying")
            await tick.wait()

    async def _pull(self) -> None:
        if not self.ctx.live_streams:  # nobody listens: no reading and serialising of every event
            await self.start()  # a stream that resumes from before this reads its gap from the index
            self.items.clear()
            return
        while True:
            after = self.last

            def fetch(after: int = after) -> list[tuple[dict[str, Any], int]]:
                with self.ctx.readers.snapshot() as conn:
                    return Q.live_rows(conn, after, BATCH)

            rows = await self.ctx.read(fetch)
            if not rows:
                return
            for event, threat in rows:
                event["new_threat"] = threat > self.max_threat
                self.max_threat = max(self.max_threat, threat)
                item = Item(event["id"], event["src_ip"] or "", event["dst_ip"] or "", event)
                item.text = json.dumps(event)
                self.items.append(item)
            self.last = rows[-1][0]["id"]
            if len(self.items) == BUFFER:
                self.base = self.items[0].id - 1
            self.wake()
            if len(rows) < BATCH:
                return

    def wake(self) -> None:
        """Wake every stream (a new Event each time: no waiter misses a round)."""
        old, self.changed = self.changed, asyncio.Event()
        old.set()

    def since(self, after: int) -> list[Item] | None:
        """Buffered events after `after`; None when the buffer no longer reaches back that far."""
        if after >= self.last:
            return []
        if after < self.base:
            return None
        items = self.items
        lo, hi = 0, len(items)
        while lo < hi:
            mid = (lo + hi) // 2
            if items[mid].id <= after:
                lo = mid + 1
            else:
                hi = mid
        return [items[i] for i in range(lo, len(items))]


HUB = web.AppKey("live_hub", LiveHub)


def _resume_id(request: web.Request, ids: EventIds | None) -> int | None | str:
    """The id to resume after; None to start at the end; a string for a bad value."""
    text = request.headers.get("Last-Event-ID") or request.query.get("after")
    if text is None or text == "":
        return None
    if ids is not None:
        value = ids.decode(text)
        return value if value is not None else "after / Last-Event-ID: expected an event id"
    if not re.fullmatch(r"\d{1,18}", text):
        return "after / Last-Event-ID: expected an event id"
    return int(text)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _wait(request: web.Request, changed: asyncio.Event, seconds: float) -> bool:
    """Wait for new events (True) or `seconds` (False), looking every second for a client that
    went away, so its stream slot is released at once (aiohttp does not cancel the handler)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not _gone(request):
        left = deadline - loop.time()
        if left <= 0:
            return False
        try:
            await asyncio.wait_for(changed.wait(), min(1.0, left))
            return True
        except TimeoutError:
            pass
    return False


def _frames(items: list[Item], scope: Scope, ids: EventIds | None) -> tuple[str, int]:
    """SSE text of the visible items and the id of the last item looked at."""
    out = []
    for item in items:
        if not scope.unrestricted and not (scope.contains_text(item.src) or scope.contains_text(item.dst)):
            continue
        if ids is None:
            out.append(f"id: {item.id}\nevent: event\ndata: {item.text}\n\n")
        else:
            token = ids.encode(item.id)
            out.append(f"id: {token}\nevent: event\ndata: {json.dumps({**item.event, 'id': token})}\n\n")
    return "".join(out), items[-1].id if items else -1


async def _backlog(ctx: Context, scope: Scope, after: int, upto: int) -> list[Item]:
    """Events (after, upto] straight from the index, for a stream that resumes from far back."""
    def fetch() -> list[tuple[dict[str, Any], int]]:
        with ctx.readers.snapshot() as conn:
            return Q.live_rows(conn, after, BATCH, scope, upto)

    return [Item(e["id"], e["src_ip"] or "", e["dst_ip"] or "", e, json.dumps(e)) for e, _ in await ctx.read(fetch)]


async def _scoped_start(ctx: Context, scope: Scope, ids: EventIds) -> tuple[int, bytes]:
    """Where a fresh scoped stream starts, and its `mark` frame: the opaque id of the last event
    in scope up to there ("" for none), the same value the answers give as `as_of`. The page
    applies to an answer only the events that follow its `as_of` in its own stream."""
    def head() -> tuple[int, int]:
        with ctx.readers.snapshot() as conn:
            return Q.last_event_id(conn), Q.last_event_id(conn, scope)

    start, mine = await ctx.read(head)
    token = ids.encode(mine) if mine else ""
    return start, f"event: mark\ndata: {json.dumps({'id': token})}\n\n".encode()


async def live(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    hub = request.app[HUB]
    user = request[USER]
    scope = scope_of(user)
    ids = EventIds(ctx.secret) if not scope.unrestricted else None
    after = _resume_id(request, ids)
    if isinstance(after, str):
        return json_error(400, after)
    user_name = user.name
    mine = ctx.live_streams.get(user_name, 0)
    if sum(ctx.live_streams.values()) >= ctx.settings.max_live_streams or mine >= PER_USER:
        return json_error(503, "too many live streams", {"Retry-After": "5"})
    token = request.cookies.get(COOKIE, "")
    ctx.live_streams[user_name] = mine + 1
    try:
        if hub.last < 0:
            await hub.start()
        mark = b""
        if after is None and ids is not None:
            after, mark = await _scoped_start(ctx, scope, ids)
        elif after is None:
            after = hub.last
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        await resp.write(b": connected\n\n" + mark)
        while not ctx.closing:
            changed = hub.changed
            items = hub.since(after)
            if items is None:
                upto = hub.last
                items = await _backlog(ctx, scope, after, upto)
                text, _ = _frames(items, scope, ids)
                if text:
                    await resp.write(text.encode())
                after = items[-1].id if len(items) == BATCH else upto
                continue
            if items:
                text, after = _frames(items, scope, ids)
                if text:
                    await resp.write(text.encode())
                continue
            if not await _wait(request, changed, PING_SECONDS):
                await resp.write(b": ping\n\n")
            if _gone(request):
                break
            session = ctx.sessions.peek(token)
            current = ctx.users.get(user_name)
            if session is None or session.user != user_name or current is None:
                break
            scope = scope_of(current)
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp
    finally:
        left = ctx.live_streams.get(user_name, 1) - 1
        if left:
            ctx.live_streams[user_name] = left
        else:
            ctx.live_streams.pop(user_name, None)
