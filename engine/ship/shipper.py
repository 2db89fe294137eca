"""The sensor's shipper (`maltrail ship`; started by `maltrail sensor` when `[ship]` is set).

The local daily log files stay the source of truth and the spool. The shipper follows them from a
persisted offset and publishes the event lines to JetStream, up to `events_per_message` whole
lines a message (1: one event a message), with the message id `SENSOR/FILE/START-END` (the lines'
byte range), so a message published twice (after a lost ack) is stored once; the server also
skips lines it already holds by their offsets. The offset only moves over lines whose publish
JetStream acknowledged, and is saved durably; NATS being down only stops that offset: the sensor
goes on writing locally and the shipper catches up on reconnect.
Heartbeats go out every few seconds; the trail feed (`engine/ship/trails.py`) runs beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext

from engine.config import SUBJECT_TOKEN, ConfigError, SensorConfig, ShipConfig
from engine.ship.files import day_files, read_json, write_json
from engine.ship.heartbeat import heartbeat
from engine.ship.natsconn import connect, describe_error, events_subject, heartbeat_subject

CHUNK_BYTES = 1 << 20
ACK_SECONDS = 5.0
IDLE_SECONDS = 0.1  # how often an idle shipper looks for new lines
RETRY_SECONDS = 1.0
DRAIN_SECONDS = 10.0  # on stop: how long to keep shipping what is left, when NATS is reachable
STATUS_SECONDS = 1.0


class PublishFailed(Exception):
    """JetStream did not acknowledge a line in time (NATS down, stream missing ...)."""


def ship_paths(sensor: SensorConfig, ship: ShipConfig) -> tuple[Path, Path]:
    """(state folder, shipper status file)."""
    state_dir = Path(ship.state_dir).expanduser() if ship.state_dir else Path(sensor.log_dir).expanduser() / ".ship"
    return state_dir, state_dir / "status.json"


def sensor_status_path(sensor: SensorConfig) -> Path:
    return Path(sensor.status_file) if sensor.status_file else Path(sensor.log_dir).expanduser() / "sensor-status.json"


def check_name(name: str) -> str:
    if not SUBJECT_TOKEN.fullmatch(name):
        raise ConfigError(f"[sensor] name: {name!r}: a shipping sensor's name may hold only letters, digits, _ and -"
                          " (it is a NATS subject token)")
    return name


class Shipper:
    """Follows the day files into JetStream; one asyncio task per concern."""

    def __init__(self, sensor: SensorConfig, ship: ShipConfig, say: Callable[[str], None] | None = None) -> None:
        self.cfg = ship
        self.name = check_name(sensor.sensor_name)
        self.log_dir = Path(sensor.log_dir).expanduser()
        self.state_dir, self.status_path = ship_paths(sensor, ship)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.offsets_path = self.state_dir / "offsets.json"
        self.offsets: dict[str, int] = {k: int(v) for k, v in read_json(self.offsets_path).get("files", {}).items()}
        self.sensor_status = sensor_status_path(sensor)
        self.subject = events_subject(ship, self.name)
        self.say = say or (lambda line: print(f"maltrail ship: {line}", file=sys.stderr, flush=True))
        self.state: dict[str, Any] = {"sensor": self.name, "pid": os.getpid(), "servers": ship.servers,
                                      "connected": False, "last_error": "", "error_since": None, "shipped": 0,
                                      "backlog_bytes": 0, "trails": {"following": ship.follow_trails}}
        self.nc: Client | None = None
        self.stop = asyncio.Event()
        self.trail_feed: Any = None
        if ship.follow_trails:
            from engine.ship.trails import TrailFeed

            self.trail_feed = TrailFeed(sensor, ship, self.state["trails"], self.say)

    # -- state ------------------------------------------------------------------------------------
    def error(self, text: str) -> None:
        if text != self.state["last_error"]:
            self.say(text)
            self.state["error_since"] = time.time()
        self.state["last_error"] = text

    def backlog(self) -> int:
        total = 0
        for name in day_files(self.log_dir):
            with contextlib.suppress(OSError):
                total += max(0, (self.log_dir / name).stat().st_size - self.offsets.get(name, 0))
        return total

    def write_status(self) -> None:
        self.state["updated"] = time.time()
        self.state["backlog_bytes"] = self.backlog()
        if self.nc is not None:
            self.state["connected"] = self.nc.is_connected
            self.state["server"] = self.nc.connected_url.netloc if self.nc.is_connected and self.nc.connected_url \
                else None
        write_json(self.status_path, self.state)

    # -- shipping ---------------------------------------------------------------------------------
    def _save_offset(self, name: str, offset: int) -> None:
        self.offsets[name] = offset
        write_json(self.offsets_path, {"files": self.offsets}, durable=True)

    async def _settle(self, js: JetStreamContext, name: str, pending: list[tuple[asyncio.Future, int, int]]) -> None:
        """Wait for the acks of `pending` (in order); the offset moves over the acknowledged prefix."""
        if not pending:
            return
        await asyncio.wait([f for f, _, _ in pending], timeout=ACK_SECONDS)
        for fut, _, _ in pending:
            if not fut.done():
                fut.cancel()  # frees its slot in the client's window; the line is sent again later
        reached, failure, complete, acked = None, None, True, 0
        for fut, end, count in pending:
            error = None if fut.cancelled() else fut.exception()  # every exception retrieved, not just the first
            if complete and (fut.cancelled() or error is not None):
                complete, failure = False, error
            elif complete:
                reached, acked = end, acked + count
        if reached is not None:
            self.state["shipped"] += acked
            self._save_offset(name, reached)
        if failure is not None or reached != pending[-1][1]:
            raise PublishFailed(describe_error(failure) if failure else "JetStream did not acknowledge in time")

    async def ship_file(self, js: JetStreamContext, name: str) -> int:
        """Publish what `name` gained since its offset (whole lines, one chunk); returns lines sent."""
        path = self.log_dir / name
        offset = self.offsets.get(name, 0)
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size < offset:  # replaced or truncated: ship it from its start
                    offset = 0
                f.seek(offset)
                data = f.read(CHUNK_BYTES)
        except FileNotFoundError:
            return 0
        end = data.rfind(b"\n") + 1
        if not end:
            return 0
        pending: list[tuple[asyncio.Future, int, int]] = []
        position, sent = offset, 0
        prefix = f"{self.name}/{name}/"
        lines = data[:end].split(b"\n")[:-1]
        step = self.cfg.events_per_message
        for first in range(0, len(lines), step):
            group = lines[first:first + step]
            payload = b"\n".join(group)
            following = position + len(payload) + 1
            fut = await js.publish_async(self.subject, payload,
                                         headers={"Nats-Msg-Id": f"{prefix}{position}-{following}"})
            pending.append((fut, following, len(group)))
            position = following
            sent += len(group)
            if len(pending) >= self.cfg.publish_window:
                await self._settle(js, name, pending)
                pending = []
        await self._settle(js, name, pending)
        return sent

    async def ship_once(self, js: JetStreamContext) -> int:
        sent = 0
        for name in day_files(self.log_dir):
            sent += await self.ship_file(js, name)
        return sent

    async def ship_loop(self, js: JetStreamContext) -> None:
        while not self.stop.is_set():
            try:
                sent = await self.ship_once(js)
                if self.state["last_error"] and self.nc is not None and self.nc.is_connected:
                    self.say("shipping again")
                    self.state.update(last_error="", error_since=None)
            except PublishFailed as exc:
                self.error(f"cannot ship ({exc}); events stay in {self.log_dir} and are sent on reconnect")
                sent = 0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), RETRY_SECONDS)
            if not sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), IDLE_SECONDS)

    async def drain(self, js: JetStreamContext) -> None:
        """On stop: ship what is left while NATS answers, for at most DRAIN_SECONDS."""
        deadline = time.monotonic() + DRAIN_SECONDS
        while self.nc is not None and self.nc.is_connected and time.monotonic() < deadline:
            try:
                if not await asyncio.wait_for(self.ship_once(js), max(0.1, deadline - time.monotonic())):
                    return
            except (PublishFailed, TimeoutError):
                return

    async def heartbeat_loop(self, nc: Client) -> None:
        """A heartbeat every `heartbeat_seconds`, the first at once and a last one on stop: a sensor
        that ran for less than the period (a short replay) is still seen, with its final counters."""
        subject = heartbeat_subject(self.cfg, self.name)
        while True:
            if nc.is_connected:
                beat = heartbeat(self.name, self.sensor_status, {k: v for k, v in self.state.items() if k != "pid"})
                with contextlib.suppress(Exception):
                    await nc.publish(subject, json.dumps(beat).encode())
            if self.stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.cfg.heartbeat_seconds)

    async def status_loop(self) -> None:
        while not self.stop.is_set():
            self.write_status()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), STATUS_SECONDS)

    # -- lifecycle --------------------------------------------------------------------------------
    async def _connect(self) -> Client | None:
        """Retry until connected or stopped (at least one attempt, so a stop right after the start
        still ships what is there); a refusal (credentials, TLS) is said once per change."""
        while True:
            try:
                return await connect(self.cfg, f"maltrail-sensor-{self.name}", self._async_error,
                                     disconnected_cb=self._disconnected, reconnected_cb=self._reconnected)
            except Exception as exc:  # nats-py raises several kinds; all mean "not now"
                self.error(describe_error(exc) + ("; retrying" if not self.stop.is_set() else ""))
            if self.stop.is_set():
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 2.0)

    async def _async_error(self, text: str) -> None:
        self.error(text)

    async def _disconnected(self) -> None:
        if not self.stop.is_set():
            self.error(f"disconnected from NATS: events stay in {self.log_dir} and are sent on reconnect")

    async def _reconnected(self) -> None:
        self.say("reconnected to NATS: catching up")
        self.state.update(last_error="", error_since=None)

    async def run(self) -> None:
        status = asyncio.create_task(self.status_loop())
        try:
            nc = self.nc = await self._connect()
            if nc is None:
                return
            self.say(f"connected to {nc.connected_url.netloc if nc.connected_url else '?'} as sensor {self.name}")
            self.state.update(last_error="", error_since=None)
            js = nc.jetstream()
            tasks = [asyncio.create_task(self.ship_loop(js)), asyncio.create_task(self.heartbeat_loop(nc))]
            if self.trail_feed is not None:
                tasks.append(asyncio.create_task(self.trail_feed.run(nc, self.stop)))
            await self.stop.wait()
            for task in tasks:
                with contextlib.suppress(Exception):
                    await task
            await self.drain(js)
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)  # the last heartbeat is a plain message: out before the close
            with contextlib.suppress(Exception):
                await nc.close()
        finally:
            self.stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await status
            self.state["connected"] = False
            self.state["stopped"] = True
            self.nc = None
            self.write_status()


def run_shipper(sensor: SensorConfig, ship: ShipConfig) -> int:
    """Blocks until SIGINT / SIGTERM."""
    shipper = Shipper(sensor, ship)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, shipper.stop.set)
        await shipper.run()

    asyncio.run(main())
    return 0
