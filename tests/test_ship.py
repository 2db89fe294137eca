"""Many sensors, one server over NATS JetStream (issue 15), with real nats-server processes on
127.0.0.1, the real `maltrail sensor`, `maltrail ship` and `maltrail server` commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nats_support import NATS_SERVER, SKIP_REASON, Nats, start_cluster, users_block, wait_for
from ship_support import (
    collected,
    day_lines,
    events,
    line_count,
    sensor_config,
    server_config,
    start_collecting_server,
    start_shipper,
    stop,
    wait_collected,
    write_events,
)
from tls_support import authority, loopback_certificate
from webui_support import DEMO_TRAIL_IPS, logged_in

from engine.index.build import build_index_file
from engine.resources import data_file
from engine.traffic import mixed_capture

REMOTE = "/api/sensors/remote"  # the collected sensors' view

pytestmark = pytest.mark.skipif(NATS_SERVER is None, reason=SKIP_REASON)


@pytest.fixture
def nats(tmp_path: Path):
    server = Nats(tmp_path, users_block(["alpha", "beta"])).start()
    yield server
    server.stop(kill=True)


def _sensor(config: Path, capture: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "sensor", "-c", str(config), "-r", str(capture)],
                          capture_output=True, text=True, timeout=300)


def test_two_sensors_union_line_for_line(tmp_path: Path, nats: Nats) -> None:
    """Two sensors replay different captures; the server holds each one's log line for line, the
    dashboard filters threats by sensor and lists both sensors with their heartbeats."""
    index = tmp_path / "trails.mtidx"
    build_index_file([str(data_file("demo_trails.csv"))], index)
    server = start_collecting_server(tmp_path, server_config(tmp_path, [nats.url]))
    try:
        client = logged_in(server, "admin")  # heartbeats are plain NATS messages: the collector listens first
        wait_for(lambda: client.get_json(REMOTE)[1]["collector"]["connected"] is True, 30, what="collector up")
        for seed, name in ((3, "alpha"), (4, "beta")):
            capture = tmp_path / f"{name}.pcap"
            mixed_capture(capture, 20_000, seed=seed, trail_ips=DEMO_TRAIL_IPS, start=time.time() - 60)
            config = sensor_config(tmp_path, name, [nats.url], sensor={"trails": str(index), "workers": 2})
            run = _sensor(config, capture)
            assert run.returncode == 0, run.stderr
        for name in ("alpha", "beta"):
            local = day_lines(tmp_path / name)
            assert line_count(local) > 20
            assert wait_collected(tmp_path, name, line_count(local)) == local

        def threats(q: str) -> list[dict]:
            status, body = client.get_json(f"/api/threats?q={q}&per_page=500")
            assert status == 200, body
            return body["rows"]

        wait_for(lambda: len(threats("sensor:alpha")) and len(threats("sensor:beta")), 30, what="indexed threats")
        assert {r["sensor"] for r in threats("sensor:alpha")} == {"alpha"}
        assert {r["sensor"] for r in threats("sensor:beta")} == {"beta"}
        status, body = client.get_json(REMOTE)
        assert status == 200 and body["collect"] is True
        rows = {r["sensor"]: r for r in body["sensors"]}
        assert set(rows) == {"alpha", "beta"}
        for row in rows.values():
            assert row["last_heartbeat"] is not None and row["index_generation"] == 1
            assert row["workers"] == 2 and row["drops"]["ring"] == 0 and row["version"]
        wait_for(lambda: not any(r["connected"] for r in client.get_json(REMOTE)[1]["sensors"]), 20,
                 what="sensors stale once their shippers stopped")
    finally:
        server.stop()


def test_nats_killed_mid_replay_every_event_once(tmp_path: Path, nats: Nats) -> None:
    """NATS is killed while the sensor writes; the sensor keeps writing locally; after the restart
    the server holds every event exactly once."""
    config = sensor_config(tmp_path, "alpha", [nats.url])
    server = start_collecting_server(tmp_path, server_config(tmp_path, [nats.url]))
    shipper = start_shipper(config)
    try:
        write_events(tmp_path / "alpha", "alpha", [events(500, i * 500) for i in range(6)], pause=0.1)
        wait_for(lambda: line_count(collected(tmp_path, "alpha")) >= 1000, 60, what="shipping under way")
        nats.stop(kill=True)
        write_events(tmp_path / "alpha", "alpha", [events(500, 3000 + i * 500) for i in range(6)], pause=0.1)
        time.sleep(1.5)  # the shipper notices, keeps everything local
        nats.start()
        write_events(tmp_path / "alpha", "alpha", [events(500, 6000 + i * 500) for i in range(6)], pause=0.1)
        local = day_lines(tmp_path / "alpha")
        assert line_count(local) == 9000
        got = wait_collected(tmp_path, "alpha", 9000)
        assert got == local
        assert len(set(next(iter(got.values())))) == 9000
    finally:
        _, err = stop(shipper)
        server.stop()
    assert "events stay in" in err  # the outage was seen and said


def test_consumer_killed_and_restarted_every_event_once(tmp_path: Path, nats: Nats) -> None:
    config = sensor_config(tmp_path, "alpha", [nats.url])
    server_cfg = server_config(tmp_path, [nats.url])
    server = start_collecting_server(tmp_path, server_cfg)
    shipper = start_shipper(config)
    try:
        write_events(tmp_path / "alpha", "alpha", [events(1000, i * 1000) for i in range(4)], pause=0.05)
        wait_for(lambda: line_count(collected(tmp_path, "alpha")) > 0, 30, what="first events")
        os.kill(server.proc.pid, signal.SIGKILL)  # mid-stream: no clean-up, no final ack
        server.proc.wait()
        write_events(tmp_path / "alpha", "alpha", [events(1000, 4000 + i * 1000) for i in range(4)], pause=0.05)
        server = start_collecting_server(tmp_path, server_cfg)
        local = day_lines(tmp_path / "alpha")
        assert wait_collected(tmp_path, "alpha", 8000) == local
        client = logged_in(server, "admin")
        wait_for(lambda: client.get_json("/api/status")[1]["index"]["caught_up"], 30, what="index")
    finally:
        stop(shipper)
        server.stop()


def test_wrong_credentials_refused_and_said(tmp_path: Path, nats: Nats) -> None:
    bad = tmp_path / "bad.password"
    bad.write_text("not-the-password\n")
    config = sensor_config(tmp_path, "alpha", [nats.url], password_file=str(bad))
    write_events(tmp_path / "alpha", "alpha", [events(10, 0)])
    shipper = start_shipper(config)
    try:
        status_file = tmp_path / "alpha" / ".ship" / "status.json"
        wait_for(lambda: status_file.exists() and "credentials" in json.loads(status_file.read_text())["last_error"],
                 30, what="the refusal in the shipper status")
        shown = subprocess.run([sys.executable, "-m", "engine.cli", "status", "-c", str(config)],
                               capture_output=True, text=True, timeout=60)
        assert "NATS refused the credentials" in shown.stdout
        assert "10 events" not in shown.stdout
    finally:
        _, err = stop(shipper)
    assert "NATS refused the credentials" in err


def test_unauthorised_publish_refused_and_foreign_sensor_rejected(tmp_path: Path) -> None:
    """Sensor `alpha` may not publish on `beta`'s subject (nats-server refuses it); a client that
    may (an account without per-sensor permissions) and writes beta's name on alpha's subject is
    rejected by the server and counted."""
    import asyncio

    import nats as nats_py
    from nats.errors import TimeoutError as NatsTimeout

    broker = Nats(tmp_path, users_block(["alpha", "beta"], open_users=("collector", "intruder"))).start()
    server = start_collecting_server(tmp_path, server_config(tmp_path, [broker.url]))
    line = (b'"2026-12-05 10:00:00.000001" beta 10.0.0.9 1234 198.51.100.66 80 TCP IP 198.51.100.66 '
            b'"known attacker" (static)')
    violations: list[str] = []

    def msg_id(sensor: str, start: int) -> dict[str, str]:
        return {"Nats-Msg-Id": f"{sensor}/2026-12-05.log/{start}-{start + len(line) + 1}"}

    async def attempt() -> None:
        async def error_cb(exc: Exception) -> None:
            violations.append(str(exc))

        nc = await nats_py.connect(broker.url, user="alpha", password="alpha-secret-1", error_cb=error_cb)
        js = nc.jetstream()
        with pytest.raises((NatsTimeout, Exception)):
            await js.publish("maltrail.events.beta", line, headers=msg_id("beta", 0), timeout=2)
        await nc.close()
        nc = await nats_py.connect(broker.url, user="intruder", password="intruder-secret-1")
        js = nc.jetstream()
        await js.publish("maltrail.events.alpha", line, headers=msg_id("alpha", 0), timeout=5)
        await js.publish("maltrail.events.beta", line, headers=msg_id("alpha", 99), timeout=5)
        await nc.close()

    try:
        client = logged_in(server, "admin")
        wait_for(lambda: client.get_json(REMOTE)[1]["collector"]["connected"] is True, 30, what="collector up")
        wait_for(lambda: _stream_ready(broker), 30, what="the events stream")
        asyncio.run(attempt())
        assert any("permissions violation" in v.lower() for v in violations), violations
        stats = wait_for(lambda: (s := client.get_json(REMOTE)[1]["collector"])["rejected"] >= 2 and s, 30,
                         what="two rejections")
        assert stats["written"] == 0
        assert not (tmp_path / "server" / "sensors" / "alpha").exists()
        assert not (tmp_path / "server" / "sensors" / "beta").exists()
    finally:
        server.stop()
        broker.stop(kill=True)


def _stream_ready(broker: Nats) -> bool:
    import asyncio

    import nats as nats_py

    async def check() -> bool:
        nc = await nats_py.connect(broker.url, user="collector", password="collector-secret-1")
        try:
            await nc.jetstream().stream_info("MALTRAIL_EVENTS")
            return True
        except Exception:
            return False
        finally:
            await nc.close()

    return asyncio.run(check())


def test_three_node_cluster_survives_a_node_loss(tmp_path: Path) -> None:
    """A three-node NATS cluster, the stream replicated three times: one node is killed mid-run
    (the one the shipper is connected to) and the server still ends with every event once."""
    nodes = start_cluster(tmp_path, users_block(["alpha"]))
    urls = [n.url for n in nodes]
    config = sensor_config(tmp_path, "alpha", urls[:1] + urls[1:])
    server = start_collecting_server(tmp_path, server_config(tmp_path, urls[::-1], replicas=3))
    shipper = start_shipper(config)
    try:
        write_events(tmp_path / "alpha", "alpha", [events(500, i * 500) for i in range(6)], pause=0.1)
        wait_for(lambda: line_count(collected(tmp_path, "alpha")) >= 1000, 90, what="shipping under way")
        connected = wait_for(lambda: json.loads((tmp_path / "alpha" / ".ship" / "status.json").read_text()
                                                ).get("server"), 10, what="the shipper's server")
        victim = next(n for n in nodes if connected.endswith(f":{n.port}"))
        victim.stop(kill=True)
        write_events(tmp_path / "alpha", "alpha", [events(500, 3000 + i * 500) for i in range(6)], pause=0.1)
        local = day_lines(tmp_path / "alpha")
        assert wait_collected(tmp_path, "alpha", 6000, timeout=120) == local
    finally:
        stop(shipper)
        server.stop()
        for node in nodes:
            node.stop(kill=True)


def test_nkey_sensor_ships_and_may_not_impersonate(tmp_path: Path) -> None:
    """A sensor authenticated by its own NKey (the seed only on the sensor, the public key in the
    server config) ships its events; the same key may not publish as another sensor."""
    import asyncio

    import nats as nats_py
    import nkeys

    from engine.config import NatsSettings
    from engine.ship.natsconn import sensor_permissions

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "gamma.nk"
    seed_file.write_bytes(seed + b"\n")
    seed_file.chmod(0o600)
    users = users_block([]) + [{"nkey": public, "permissions": sensor_permissions(NatsSettings(), "gamma")}]
    broker = Nats(tmp_path, users).start()
    config = sensor_config(tmp_path, "gamma", [broker.url], user="", password_file="", nkey_seed_file=str(seed_file))
    server = start_collecting_server(tmp_path, server_config(tmp_path, [broker.url]))
    shipper = start_shipper(config)
    errors: list[str] = []

    async def impersonate() -> None:
        async def error_cb(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats_py.connect(broker.url, nkeys_seed_str=seed.decode(), error_cb=error_cb)
        await nc.publish("maltrail.events.alpha", b"x")
        await nc.flush()
        await asyncio.sleep(0.5)
        await nc.close()

    try:
        write_events(tmp_path / "gamma", "gamma", [events(300, 0)])
        assert wait_collected(tmp_path, "gamma", 300) == day_lines(tmp_path / "gamma")
        asyncio.run(impersonate())
        assert any("permissions violation" in e.lower() for e in errors), errors
    finally:
        stop(shipper)
        server.stop()
        broker.stop(kill=True)


def test_tls_ships_and_an_unverified_server_is_refused(tmp_path: Path) -> None:
    """With TLS required by nats-server, a sensor given the CA ships; one without it refuses the
    server's certificate and says so (nothing is sent in clear)."""
    cert, key = loopback_certificate(tmp_path)
    broker = Nats(tmp_path, users_block(["alpha", "beta"]),
                  tls={"cert_file": str(cert), "key_file": str(key), "timeout": 2}).start()
    url = f"tls://127.0.0.1:{broker.port}"
    server = start_collecting_server(tmp_path, server_config(tmp_path, [url], tls_ca=str(cert)))
    good = start_shipper(sensor_config(tmp_path, "alpha", [url], tls_ca=str(cert)))
    bad = start_shipper(sensor_config(tmp_path, "beta", [url]))
    try:
        write_events(tmp_path / "alpha", "alpha", [events(200, 0)])
        write_events(tmp_path / "beta", "beta", [events(200, 0)])
        assert wait_collected(tmp_path, "alpha", 200) == day_lines(tmp_path / "alpha")
        status_file = tmp_path / "beta" / ".ship" / "status.json"
        wait_for(lambda: status_file.exists() and "CERTIFICATE_VERIFY_FAILED" in
                 json.loads(status_file.read_text())["last_error"].upper().replace(" ", "_"), 30,
                 what="the unverified certificate refused")
        assert collected(tmp_path, "beta") == {}
    finally:
        stop(good)
        stop(bad)
        server.stop()
        broker.stop(kill=True)


def test_mutual_tls_client_certificates_are_the_sensors_identities(tmp_path: Path) -> None:
    """nats-server requires a client certificate signed by the site's CA and maps its subject to
    the NATS user (`verify_and_map`), so the certificate is the sensor's identity: alpha's ships;
    a sensor without one, or with one from another CA, is refused and says so; alpha's certificate
    in a sensor named beta may not publish beta's events."""
    ca, issue = authority(tmp_path, "site")
    other_ca, other_issue = authority(tmp_path, "other")
    server_cert, server_key = issue("nats", server=True)
    users = [{"user": "CN=collector"}] + [
        {"user": f"CN={u['user']}", "permissions": u["permissions"]} for u in users_block(["alpha", "beta"], ())]
    broker = Nats(tmp_path, [], authorization={"users": users}, tls={
        "cert_file": str(server_cert), "key_file": str(server_key), "ca_file": str(ca), "verify_and_map": True,
        "timeout": 2}).start()
    url = f"tls://127.0.0.1:{broker.port}"

    def client(name: str, cert: tuple[Path, Path] | None) -> dict[str, str]:
        return {"user": "", "password_file": "", "tls_ca": str(ca),
                **({"tls_cert": str(cert[0]), "tls_key": str(cert[1])} if cert else {})}

    collector = client("collector", issue("collector"))
    server = start_collecting_server(tmp_path, server_config(tmp_path, [url], **collector))
    alpha_cert = issue("alpha")
    shippers = {name: start_shipper(sensor_config(tmp_path, name, [url], **client(name, cert)))
                for name, cert in (("alpha", alpha_cert), ("beta", None), ("gamma", other_issue("gamma")),
                                   ("delta", alpha_cert))}
    try:
        for name in shippers:
            write_events(tmp_path / name, name, [events(200, 0)])
        assert wait_collected(tmp_path, "alpha", 200) == day_lines(tmp_path / "alpha")
        errors = {}
        for name in ("beta", "gamma", "delta"):
            status_file = tmp_path / name / ".ship" / "status.json"
            errors[name] = wait_for(lambda f=status_file: f.exists() and json.loads(f.read_text())["last_error"], 30,
                                    what=f"{name} refused")
        for name in ("beta", "gamma"):  # TLS 1.3: the server's alert, or the connection it closed, comes first
            assert any(s in errors[name].upper() for s in ("BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "BROKEN PIPE",
                                                           "CONNECTION RESET")), errors
            assert not json.loads((tmp_path / name / ".ship" / "status.json").read_text())["connected"]
        assert "permissions violation" in errors["delta"] and "delta" in errors["delta"], errors
        for name in ("beta", "gamma", "delta"):
            assert collected(tmp_path, name) == {}
    finally:
        for proc in shippers.values():
            stop(proc)
        server.stop()
        broker.stop(kill=True)
