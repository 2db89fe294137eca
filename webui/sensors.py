"""`/api/sensors`: the collected sensors' view (`[collect]`): last heartbeat, connected or stale,
index generation and age, packets/s, drops, workers, output health; and the collector's tasks.

Threats are filtered by sensor with the search language (`q=sensor:NAME`) on `/api/threats`."""

from __future__ import annotations

import asyncio

from aiohttp import web

from webui.app import Context, ctx_of


async def sensors(request: web.Request) -> web.Response:
    collector = ctx_of(request).collector
    if collector is None:
        return web.json_response({"collect": False, "sensors": [],
                                  "note": "no [collect] section: this server collects no remote sensors"})
    return web.json_response({"collect": True, "stale_seconds": collector.cfg.stale_seconds,
                              "collector": collector.status(), "sensors": collector.sensors()})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/sensors", sensors)


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
