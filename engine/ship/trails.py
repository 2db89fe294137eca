"""Trail distribution through a JetStream object store.

The server (the one place that runs `maltrail update`) publishes each new index file as the object
`trails.mtidx`, its SHA-256 in the description. A sensor with `[ship] follow_trails` polls the
object's info, fetches a new one, checks the digest and that it maps as an index, and renames it
over its `[sensor] trails` file: the running sensor's reloader adopts it exactly as after a local
`maltrail update`. When NATS cannot be reached the sensor keeps its last good index and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js.api import ObjectMeta, ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError

from engine.config import CollectConfig, ConfigError, SensorConfig, ShipConfig
from engine.index.fileformat import is_index_file
from engine.ship.natsconn import describe_error

OBJECT_NAME = "trails.mtidx"
DIGEST_PREFIX = "sha256:"
PUBLISH_POLL_SECONDS = 2.0


def digest_of(data: bytes) -> str:
    return DIGEST_PREFIX + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str | None:
    try:
        return digest_of(path.read_bytes())
    except OSError:
        return None


async def publish_trails(nc: Client, cfg: CollectConfig, path: Path, stop: asyncio.Event,
                         say: Callable[[str], None], state: dict[str, Any]) -> None:
    """Server side: put every new index file found at `path` into the object store."""
    js = nc.jetstream()
    published: str | None = None
    seen: tuple[int, int, int] | None = None
    while not stop.is_set():
        try:
            st = path.stat()
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
            if signature != seen and is_index_file(path):
                data = path.read_bytes()
                digest = digest_of(data)
                try:
                    obs = await js.object_store(cfg.trails_bucket)
                except (BucketNotFoundError, NotFoundError):
                    obs = await js.create_object_store(cfg.trails_bucket, ObjectStoreConfig(
                        bucket=cfg.trails_bucket, replicas=cfg.replicas, storage=StorageType.FILE))
                if published is None:
                    with contextlib.suppress(ObjectNotFoundError, NotFoundError):
                        published = (await obs.get_info(OBJECT_NAME)).description
                if digest != published:
                    await obs.put(OBJECT_NAME, data, meta=ObjectMeta(name=OBJECT_NAME, description=digest))
                    published = digest
                    state["generations_published"] = state.get("generations_published", 0) + 1
                    say(f"published trail index {path} ({len(data)} bytes, {digest[:19]}...) to the sensors")
                state.update(published=digest, published_at=time.time(), last_error="")
                seen = signature
        except FileNotFoundError:
            pass
        except Exception as exc:  # NATS down or refusing: try again at the next poll
            state["last_error"] = describe_error(exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PUBLISH_POLL_SECONDS)


def _target(sensor: SensorConfig) -> Path:
    if not sensor.trails:
        raise ConfigError("[ship] follow_trails: set [sensor] trails to the index file the feed replaces")
    path = Path(sensor.trails).expanduser()
    if path.is_dir() or (path.exists() and not is_index_file(path)) or sensor.custom_trails:
        raise ConfigError("[ship] follow_trails: [sensor] trails must name a prebuilt index file (.mtidx) and "
                          "custom_trails be empty: the server's index already holds them")
    return path


class TrailFeed:
    """Sensor side: follow the object store into `[sensor] trails`."""

    def __init__(self, sensor: SensorConfig, ship: ShipConfig, state: dict[str, Any],
                 say: Callable[[str], None]) -> None:
        self.cfg = ship
        self.target = _target(sensor)
        self.state = state
        self.say = say
        state.update(target=str(self.target), installed=file_digest(self.target), installs=0, last_error="",
                     last_check=None, reachable=None)

    def _install(self, data: bytes, digest: str) -> None:
        """Digest checked, then mapped as an index, then renamed over the target in one step."""
        from engine.reload import validate

        if digest_of(data) != digest:
            raise ValueError(f"digest mismatch: announced {digest[:19]}..., received {digest_of(data)[:19]}...")
        tmp = self.target.with_name(f".{self.target.name}.feed")
        tmp.write_bytes(data)
        try:
            validate(tmp)
            os.replace(tmp, self.target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    async def check(self, nc: Client) -> None:
        js = nc.jetstream()
        obs = await js.object_store(self.cfg.trails_bucket)
        info = await obs.get_info(OBJECT_NAME)
        self.state.update(available=info.description, last_check=time.time(), reachable=True)
        if info.description == self.state.get("installed"):
            return
        result = await obs.get(OBJECT_NAME)
        data = result.data or b""
        await asyncio.get_running_loop().run_in_executor(None, self._install, data, info.description or "")
        self.state.update(installed=info.description, installed_at=time.time(), installs=self.state["installs"] + 1)
        self.say(f"installed trail index {info.description[:19]}... from the server ({len(data)} bytes)")

    async def run(self, nc: Client, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not nc.is_connected:
                self.state.update(reachable=False,
                                  last_error="NATS unreachable: keeping the last good trail index")
            else:
                try:
                    await self.check(nc)
                    self.state["last_error"] = ""
                except (BucketNotFoundError, ObjectNotFoundError, NotFoundError):
                    self.state.update(last_error="the server has published no trail index yet", reachable=True)
                except Exception as exc:  # a bad object or NATS trouble: the last good index stays
                    self.state["last_error"] = f"keeping the last good trail index: {describe_error(exc)}"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.cfg.trails_poll_seconds)
