"""`/api/sensors/remote`: the collected sensors' view (`[collect]`): last heartbeat, connected or
stale, index generation and age, packets/s, drops, workers, output health; and the collector's
tasks. (`/api/sensors`, `webui/sensors.py`, lists the sensors whose status files this server reads.)
A user scoped to some networks sees each sensor's name and state only, as on `/api/sensors`.

Threats are filtered by sensor with the search language (`q=sensor:NAME`) on `/api/threats`."""

from __future__ import annotations

import asyncio

from aiohttp import web

from webui.app import USER, Context, ctx_of
from webui.auth import scope_of


async def remote_sensors(request: web.Request) -> web.Response:
    collector = ctx_of(request).collector
    if collector is None:
        return web.json_response({"collect": False, "sensors": [],
                                  "note": "no [collect] section: this server collects no remote sensors"})
    user = request.get(USER)
    if user is not None and not scope_of(user).unrestricted:
        return web.json_response({"collect": True, "scoped": True, "sensors": [
            {"sensor": s.get("sensor"), "state": s.get("state")} for s in collector.sensors()]})
    return web.json_response({"collect": True, "stale_seconds": collector.cfg.stale_seconds,
                              "collector": collector.status(), "sensors": collector.sensors()})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/sensors/remote", remote_sensors)


async def _wake_ingest(ctx: Context) -> None:
    """A committed batch wakes the index follower at once (event visible within a second)."""
    collector = ctx.collector
    while not ctx.closing:
        await collector.written.wait()
        collector.written.clear()
        ctx.ingest_wake.set()


def collect_tasks(ctx: Context) -> list[asyncio.Task]:
    """The collector and its wake-up of the ingest loop; cancelled with the server's other tasks
    (the collector's own clean-up closes the UDP socket and the NATS connection)."""
    return [asyncio.create_task(ctx.collector.run()), asyncio.create_task(_wake_ingest(ctx))]
