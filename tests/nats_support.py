"""Real `nats-server` processes on 127.0.0.1 for the [ship]/[collect] tests: a free port, JetStream
with its store in the test's tmp folder, per-sensor users with the permissions the project
documents (`engine.ship.natsconn.sensor_permissions`), stop / kill / restart on the same store."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import NatsSettings
from engine.ship.natsconn import sensor_permissions

NATS_SERVER = shutil.which("nats-server", path="/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin")
SKIP_REASON = "nats-server is not installed (scripts/setup.sh installs Debian's nats-server)"
PASSWORDS = {"collector": "collector-secret-1", "alpha": "alpha-secret-1", "beta": "beta-secret-1",
             "intruder": "intruder-secret-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def users_block(sensors: list[str], open_users: tuple[str, ...] = ("collector",)) -> list[dict[str, Any]]:
    """The collector (and any `open_users`) may do everything; each sensor only its own subjects."""
    out: list[dict[str, Any]] = [{"user": u, "password": PASSWORDS[u]} for u in open_users]
    for name in sensors:
        out.append({"user": name, "password": PASSWORDS[name], "permissions": sensor_permissions(NatsSettings(), name)})
    return out


@dataclass
class Nats:
    """One nats-server; `cluster` lists the other nodes' route ports when clustered."""

    root: Path
    users: list[dict[str, Any]]
    name: str = "n1"
    port: int = field(default_factory=free_port)
    cluster_port: int = 0
    routes: list[int] = field(default_factory=list)
    tls: dict[str, str] | None = None
    authorization: dict[str, Any] | None = None  # instead of `users` (e.g. {"token": ...})
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def write_conf(self) -> Path:
        store = self.root / f"js-{self.name}"
        store.mkdir(parents=True, exist_ok=True)
        conf: dict[str, Any] = {"server_name": self.name, "listen": f"127.0.0.1:{self.port}",
                                "jetstream": {"store_dir": str(store)},
                                "authorization": self.authorization or {"users": self.users}}
        if self.tls:
            conf["tls"] = self.tls
        if self.cluster_port:
            conf["cluster"] = {"name": "mt", "listen": f"127.0.0.1:{self.cluster_port}",
                               "routes": [f"nats://127.0.0.1:{p}" for p in self.routes]}
        path = self.root / f"{self.name}.conf"
        path.write_text(json.dumps(conf, indent=1))  # nats-server reads JSON as its config syntax
        return path

    def start(self, wait: bool = True) -> Nats:
        conf = self.write_conf()
        log = open(self.root / f"{self.name}.log", "ab")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen([NATS_SERVER, "-c", str(conf)], stdout=log, stderr=log)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, (self.root / f"{self.name}.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(4096).startswith(b"INFO"):  # sent in clear before any TLS handshake
                        return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"nats-server {self.name} did not start")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.proc.wait(20)
        self.proc = None


def start_cluster(root: Path, users: list[dict[str, Any]], size: int = 3) -> list[Nats]:
    """`size` nats-servers routed to each other (one JetStream cluster), all ready."""
    ports = [free_port() for _ in range(size)]
    nodes = [Nats(root, users, name=f"n{i + 1}", cluster_port=ports[i],
                  routes=[p for j, p in enumerate(ports) if j != i]) for i in range(size)]
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready()
    return nodes


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """A maltrail.toml from plain values (strings, numbers, booleans, lists of strings)."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def secret_file(folder: Path, user: str) -> str:
    path = folder / f"{user}.password"
    path.write_text(PASSWORDS[user] + "\n")
    path.chmod(0o600)
    return str(path)


def wait_for(predicate: Any, timeout: float = 60.0, step: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"timed out waiting for {what}")

