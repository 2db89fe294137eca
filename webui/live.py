"""Live events over Server-Sent Events, resumable by event id.

Each event goes out as `id: <event id>` / `event: event` / `data: <Event JSON>`. A client that
reconnects with `Last-Event-ID` (browsers do it themselves) or `?after=ID` gets exactly the
events after that id; without either it starts at the current end (no replay of the day). The
stream sleeps on the ingest notifier (no polling), sends `: ping` every 15 s, applies the user's
scope to every event, and ends as soon as the session is gone (logout, expiry, user removed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re

from aiohttp import web

from webui import queries as Q
from webui.app import COOKIE, USER, ctx_of, json_error
from webui.auth import scope_of
from webui.netaddr import Scope

PING_SECONDS = 15.0
BATCH = 500
PER_USER = 8  # one analyst cannot hold every stream


def _resume_id(request: web.Request) -> int | None | str:
    """The id to resume after; None to start at the end; a string for a bad value."""
    text = request.headers.get("Last-Event-ID") or request.query.get("after")
    if text is None or text == "":
        return None
    if not re.fullmatch(r"\d{1,18}", text):
        return "after / Last-Event-ID: expected an event id"
    return int(text)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _wait(request: web.Request, tick: asyncio.Event, seconds: float) -> bool:
    """Wait for new events (True) or `seconds` (False), looking every second for a client that
    went away, so its stream slot is released at once (aiohttp does not cancel the handler)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not _gone(request):
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return False
        try:
            await asyncio.wait_for(tick.wait(), min(1.0, left))
            return True
        except TimeoutError:
            pass
    return False


async def live(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    after = _resume_id(request)
    if isinstance(after, str):
        return json_error(400, after)
    user_name = request[USER].name
    mine = ctx.live_streams.get(user_name, 0)
    if sum(ctx.live_streams.values()) >= ctx.settings.max_live_streams or mine >= PER_USER:
        return json_error(503, "too many live streams", {"Retry-After": "5"})
    scope = scope_of(request[USER])
    token = request.cookies.get(COOKIE, "")
    ctx.live_streams[user_name] = mine + 1
    try:
        if after is None:
            after = await ctx.read(lambda: Q.last_event_id(ctx.readers.get()))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        await resp.write(b": connected\n\n")
        while not ctx.closing:
            tick = ctx.tick
            position = after

            def fetch(position: int = position, scope: Scope = scope) -> list[dict]:
                return Q.live_after(ctx.readers.get(), scope, position, BATCH)

            events = await ctx.read(fetch)
            if events:
                await resp.write("".join(f"id: {e['id']}\nevent: event\ndata: {json.dumps(e)}\n\n"
                                         for e in events).encode())
                after = events[-1]["id"]
                if len(events) == BATCH:
                    continue
            if not await _wait(request, tick, PING_SECONDS):
                await resp.write(b": ping\n\n")
            if _gone(request):
                break
            session = ctx.sessions.peek(token)
            user = ctx.users.get(user_name)
            if session is None or session.user != user_name or user is None:
                break
            scope = scope_of(user)
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp
    finally:
        left = ctx.live_streams.get(user_name, 1) - 1
        if left:
            ctx.live_streams[user_name] = left
        else:
            ctx.live_streams.pop(user_name, None)
