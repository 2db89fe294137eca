"""The server's collector (`maltrail server` with `[collect]`): a durable JetStream consumer that
writes each sensor's events into `LOG_DIR/sensors/SENSOR/YYYY-MM-DD.log` (the dashboard's index
follows those files), and the sensors' heartbeats.

Exactly once on the server: a batch is appended, fsynced, and only then is the commit record
(every file's committed size, per sensor file the next offset expected, and the last stream
sequence committed) replaced durably; the batch is acknowledged after that. On start, bytes past
a file's committed size (a crash between the write and the record) are cut off, and the durable
consumer is made again to deliver from the sequence after the committed one: the commit record,
not the consumer's ack state, says where to go on, so a message delivered to a killed server is
delivered again in order. A message whose (sensor, file, offset) is below the expected offset
(the sensor published it twice beyond JetStream's duplicate window) is skipped. An
event whose subject, message id and sensor column do not name the same sensor is rejected.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from engine.config import SUBJECT_TOKEN, CollectConfig, ConfigError
from engine.ship.files import DAY_FILE, SENSORS_DIR, read_json, write_json
from engine.ship.natsconn import connect, describe_error

STATE_FILE = ".collect-state.json"
FETCH_SECONDS = 0.5
log = logging.getLogger("maltrail.collect")


def line_sensor(line: bytes) -> str | None:
    """The sensor column of an event line (`"YYYY-MM-DD HH:MM:SS.ffffff" SENSOR ...`)."""
    if len(line) < 30 or line[0:1] != b'"' or line[27:29] != b'" ':
        return None
    end = line.find(b" ", 29)
    return line[29:end if end > 0 else len(line)].decode("utf-8", "replace")


@functools.lru_cache(maxsize=1024)
def _lines_of(sensor: str) -> re.Pattern[bytes]:
    """Lines that all name `sensor` in their sensor column (as `line_sensor` reads it), in one C pass."""
    line = rb'"[^\n]{26}" ' + re.escape(sensor.encode()) + rb'(?: [^\n]*)?'
    return re.compile(rb"(?:%s\n)*%s" % (line, line))


class Rejected(Exception):
    """An event the server refuses (named sensors disagree, bad message id)."""


def check_event(subject: str, headers: dict[str, str] | None, data: bytes) -> tuple[str, str, int, bytes]:
    """(sensor, day file, offset of the first line, the lines without their last newline) of an
    acceptable event message. Its id is `SENSOR/FILE/START-END` (the lines' byte range in the
    sensor's file)."""
    sensor = subject.rsplit(".", 1)[-1]
    msg_id = (headers or {}).get("Nats-Msg-Id", "")
    parts = msg_id.split("/")
    start, _, end = parts[2].partition("-") if len(parts) == 3 else ("", "", "")
    if not (start.isdigit() and end.isdigit() and DAY_FILE.fullmatch(parts[1])):
        raise Rejected(f"event on {subject} with a bad message id {msg_id[:80]!r}")
    if parts[0] != sensor or not SUBJECT_TOKEN.fullmatch(sensor):
        raise Rejected(f"event on {subject} carries the message id of sensor {parts[0][:40]!r}")
    if int(end) - int(start) != len(data) + 1:
        raise Rejected(f"event on {subject}: message id {msg_id[:80]!r} does not match its {len(data)} bytes")
    if _lines_of(sensor).fullmatch(data) is None:
        named = next(n for n in map(line_sensor, data.split(b"\n")) if n != sensor)
        raise Rejected(f"event on {subject} names sensor {named!r} in its sensor column")
    return sensor, parts[1], int(start), data


class EventFiles:
    """The per-sensor day files and their commit record (the durable part; runs in a thread)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.state_path = root / STATE_FILE
        state = read_json(self.state_path)
        self.sizes: dict[str, int] = {k: int(v) for k, v in state.get("files", {}).items()}
        self.expected: dict[str, int] = {k: int(v) for k, v in state.get("sources", {}).items()}
        self.stream_seq = int(state.get("stream_seq", 0))
        self.recover()

    def recover(self) -> None:
        """Cut every file back to its committed size (uncommitted bytes are redelivered)."""
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if DAY_FILE.fullmatch(path.name):
                    key = f"{folder.name}/{path.name}"
                    committed = self.sizes.get(key, 0)
                    if path.stat().st_size > committed:
                        log.warning("%s: dropping %d uncommitted bytes (redelivered by JetStream)",
                                    path, path.stat().st_size - committed)
                        os.truncate(path, committed)

    def commit(self, events: list[tuple[str, str, int, bytes]], stream_seq: int) -> tuple[int, int, int]:
        """Append the new lines, fsync, then record the commit durably; (written, duplicates, gaps).

        Per sensor file, lines below the next expected offset were written already (skipped); a
        message starting beyond it follows one that never reached the stream, and is dropped: the
        shipper only moves over acknowledged lines, so it sends both again, in order. A file the
        record does not know starts wherever its first message does (stream expired, record lost)."""
        chunks: dict[str, list[bytes]] = {}
        duplicates = gaps = 0
        for sensor, day, start, data in events:
            key = f"{sensor}/{day}"
            expected = self.expected.get(key, start)
            if start > expected:
                gaps += 1
                continue
            lines = data.count(b"\n") + 1
            cut = 0
            if start < expected:  # skip the lines that start below `expected`
                cut = data.find(b"\n", expected - start - 1) + 1
                if cut == 0:
                    duplicates += lines
                    self.expected[key] = max(expected, start + len(data) + 1)
                    continue
                duplicates += data.count(b"\n", 0, cut)
            chunks.setdefault(key, []).append(data[cut:].replace(b"\r", b" ") + b"\n")
            self.expected[key] = max(expected, start + len(data) + 1)
        written = 0
        for key, parts in chunks.items():
            path = self.root / key
            path.parent.mkdir(exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                data = b"".join(parts)
                written += data.count(b"\n")
                while data:
                    data = data[os.write(fd, data):]
                os.fsync(fd)
                self.sizes[key] = os.fstat(fd).st_size
            finally:
                os.close(fd)
        self.stream_seq = stream_seq
        write_json(self.state_path, {"files": self.sizes, "sources": self.expected, "stream_seq": stream_seq},
                   durable=True)
        return written, duplicates, gaps


def check_collect(cfg: CollectConfig) -> None:
    """What `[collect]` names that only the server can check, before it starts."""
    if cfg.udp_listen:
        from engine.ship.udp import parse_allow, parse_udp_listen

        parse_udp_listen(cfg.udp_listen)
        if not cfg.udp_allow:
            raise ConfigError("[collect] udp_allow: the UDP intake needs an allowlist of sensor addresses")
        parse_allow(cfg.udp_allow)
    for key in ("password_file", "token_file", "nkey_seed_file", "tls_ca", "tls_cert", "tls_key"):
        value = getattr(cfg, key)
        if value and not Path(value).expanduser().is_file():
            raise ConfigError(f"[collect] {key}: {value} is not a file")


class Collector:
    """Consumes the events stream and the heartbeats; `sensors()` is the dashboard's view."""

    def __init__(self, cfg: CollectConfig, log_dir: Path, say: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.root = log_dir / SENSORS_DIR
        self.files = EventFiles(self.root)
        self.say = say or (lambda line: log.warning("%s", line))
        self.stats: dict[str, Any] = {"connected": False, "received": 0, "written": 0, "duplicates": 0,
                                      "rejected": 0, "gaps_dropped": 0, "last_rejection": "", "last_error": "",
                                      "heartbeats_rejected": 0, "trails": {}}
        self.heartbeats: dict[str, dict[str, Any]] = {}
        for folder in self.root.iterdir():
            beat = folder / "heartbeat.json"
            if beat.is_file():
                with contextlib.suppress(OSError, ValueError):
                    self.heartbeats[folder.name] = json.loads(beat.read_text())
        self.stop = asyncio.Event()
        self.written = asyncio.Event()  # set after each committed batch (the server wakes its ingester)
        self.nc: Client | None = None

    def _error(self, text: str) -> None:
        if text != self.stats["last_error"]:
            self.say(text)
        self.stats["last_error"] = text

    async def ensure_stream(self, nc: Client) -> None:
        js = nc.jetstream()
        config = StreamConfig(name=self.cfg.stream, subjects=[f"{self.cfg.subject_prefix}.events.*"],
                              storage=StorageType.FILE, num_replicas=self.cfg.replicas,
                              duplicate_window=float(self.cfg.duplicate_window_seconds))
        try:
            await js.add_stream(config)
        except BadRequestError:  # exists with other settings: bring it to these
            await js.update_stream(config)

    async def on_heartbeat(self, msg: Msg) -> None:
        sensor = msg.subject.rsplit(".", 1)[-1]
        try:
            beat = json.loads(msg.data)
        except ValueError:
            beat = None
        if not isinstance(beat, dict) or beat.get("sensor") != sensor or not SUBJECT_TOKEN.fullmatch(sensor):
            self.stats["heartbeats_rejected"] += 1
            return
        beat["received"] = time.time()
        self.heartbeats[sensor] = beat
        folder = self.root / sensor
        folder.mkdir(exist_ok=True)
        write_json(folder / "heartbeat.json", beat)

    async def consume(self, nc: Client) -> None:
        js = nc.jetstream()
        with contextlib.suppress(NotFoundError):  # made again from the commit record (see above)
            await js.delete_consumer(self.cfg.stream, self.cfg.durable)
        sub = await js.pull_subscribe(
            f"{self.cfg.subject_prefix}.events.*", durable=self.cfg.durable, stream=self.cfg.stream,
            config=ConsumerConfig(ack_policy=AckPolicy.ALL, deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                  opt_start_seq=self.files.stream_seq + 1, ack_wait=30, max_ack_pending=-1))
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            try:
                msgs = await sub.fetch(self.cfg.batch, timeout=FETCH_SECONDS)
            except TimeoutError:
                continue
            except Exception as exc:  # NATS gone for a moment: the client reconnects
                self._error(f"fetching events: {describe_error(exc)}")
                await asyncio.sleep(0.5)
                continue
            if not msgs:
                continue
            events = []
            for msg in msgs:
                try:
                    events.append(check_event(msg.subject, msg.headers, msg.data))
                except Rejected as exc:
                    self.stats["rejected"] += 1
                    if self.stats["last_rejection"] != str(exc):
                        self.say(f"rejected: {exc}")
                    self.stats["last_rejection"] = str(exc)
            written, duplicates, gaps = await loop.run_in_executor(None, self.files.commit, events,
                                                                   msgs[-1].metadata.sequence.stream)
            await msgs[-1].ack_sync()  # AckPolicy.ALL: the batch up to here, now that it is durable
            self.stats["received"] += len(msgs)
            self.stats["written"] += written
            self.stats["duplicates"] += duplicates
            self.stats["gaps_dropped"] += gaps
            self.stats["last_error"] = ""
            if written:
                self.written.set()

    async def run(self) -> None:
        """The UDP intake when configured (it needs no NATS); connect (retrying), make sure the
        stream exists, consume until `stop`."""
        tasks: list[asyncio.Task] = []
        udp = None
        if self.cfg.udp_listen:
            from engine.ship.udp import start_udp

            udp = await start_udp(self.cfg, self.root.parent, self.stats)
        try:
            while not self.stop.is_set() and self.nc is None:
                try:
                    self.nc = await connect(self.cfg, "maltrail-server", self._async_error)
                except Exception as exc:
                    self._error(describe_error(exc) + "; retrying")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), 2.0)
            nc = self.nc
            if nc is None:
                return
            await nc.subscribe(f"{self.cfg.subject_prefix}.hb.*", cb=self.on_heartbeat)
            if self.cfg.publish_trails:
                from engine.ship.trails import publish_trails

                tasks.append(asyncio.create_task(publish_trails(
                    nc, self.cfg, Path(self.cfg.publish_trails).expanduser(), self.stop, self.say,
                    self.stats["trails"])))
            while not self.stop.is_set():
                try:
                    await self.ensure_stream(nc)
                    await self.consume(nc)
                except Exception as exc:  # NATS away, stream or consumer not there yet: the batch is redelivered
                    self._error(f"consumer: {describe_error(exc)}; retrying")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), 1.0)
        finally:
            self.stop.set()
            for task in tasks:
                with contextlib.suppress(Exception):
                    await task
            if udp is not None:
                udp[0].close()
                udp[1].close()
            if self.nc is not None:
                with contextlib.suppress(Exception):
                    await self.nc.close()

    async def _async_error(self, text: str) -> None:
        self._error(text)

    def status(self) -> dict[str, Any]:
        """The collector's counters, with whether it is connected to NATS now."""
        self.stats["connected"] = self.nc is not None and self.nc.is_connected
        return self.stats

    def sensors(self, now: float | None = None) -> list[dict[str, Any]]:
        """One row per sensor known (events or heartbeats): last heartbeat, connected or stale, index
        generation and age, packets/s, drops, workers, output health, the shipper's backlog."""
        now = time.time() if now is None else now
        names = set(self.heartbeats) | {k.split("/", 1)[0] for k in self.files.sizes}
        rows = []
        for name in sorted(names):
            beat = self.heartbeats.get(name, {})
            received = beat.get("received")
            age = round(now - received, 1) if received else None
            index = beat.get("index") or {}
            built = index.get("built_at")
            ship = beat.get("ship") or {}
            rows.append({
                "sensor": name, "last_heartbeat": received, "heartbeat_age_seconds": age,
                "connected": age is not None and age <= self.cfg.stale_seconds,
                "state": beat.get("state", "unknown"), "version": beat.get("version"),
                "index_generation": index.get("generation"),
                "index_age_seconds": round(now - float(built), 1) if built else None,
                "packets_per_second": beat.get("packets_per_second"), "drops": beat.get("drops"),
                "workers": beat.get("workers"), "outputs": beat.get("outputs"),
                "backlog_bytes": ship.get("backlog_bytes"), "ship_error": ship.get("last_error") or "",
                "trails": ship.get("trails"),
            })
        return rows
