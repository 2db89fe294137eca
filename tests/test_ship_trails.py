"""Trail distribution over a JetStream object store, the Maltrail UDP intake with its guards, and
the single machine with no NATS at all (issue 15). Real nats-server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nats_support import (
    NATS_SERVER,
    PASSWORDS,
    SKIP_REASON,
    Nats,
    free_port,
    start_cluster,
    users_block,
    wait_for,
)
from ship_support import server_config, start_collecting_server
from webui_support import DEMO_TRAIL_IPS, logged_in

from engine.index.build import build_index_file
from engine.resources import data_file
from engine.traffic import mixed_capture

REMOTE = "/api/sensors/remote"  # the collected sensors' view

needs_nats = pytest.mark.skipif(NATS_SERVER is None, reason=SKIP_REASON)


def _status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@needs_nats
def test_object_store_update_reaches_running_sensor(tmp_path: Path) -> None:
    """The server publishes a new index; a running sensor (restricted NATS user) fetches it, checks
    its digest, reloads it as after a local update; a corrupt object is refused and the last good
    index kept; with NATS gone, `maltrail status` says the sensor keeps its last good index."""
    from ship_support import sensor_config

    broker = Nats(tmp_path, users_block(["alpha"])).start()
    first = tmp_path / "first.mtidx"
    build_index_file([str(data_file("demo_trails.csv"))], first)
    bigger_csv = tmp_path / "bigger.csv"
    bigger_csv.write_text(data_file("demo_trails.csv").read_text() + "evil.example,malware (feed test),(static)\n")
    published = tmp_path / "server-trails.mtidx"
    published_trails = build_index_file([str(bigger_csv)], published)["counts"]["entries"]
    sensor_trails = tmp_path / "sensor-trails.mtidx"
    shutil.copyfile(first, sensor_trails)
    capture = tmp_path / "slow.pcap"
    mixed_capture(capture, 40_000, seed=5, trail_ips=DEMO_TRAIL_IPS, start=time.time())
    config = sensor_config(tmp_path, "alpha", [broker.url], follow_trails=True, trails_poll_seconds=1,
                           sensor={"trails": str(sensor_trails)})
    server = start_collecting_server(tmp_path, server_config(tmp_path, [broker.url], publish_trails=str(published)))
    sensor = subprocess.Popen([sys.executable, "-m", "engine.cli", "sensor", "-c", str(config), "-r", str(capture),
                               "--rate", "1000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status_file = tmp_path / "alpha" / "sensor-status.json"
    ship_file = tmp_path / "alpha" / ".ship" / "status.json"
    try:
        index = wait_for(lambda: (_status(status_file).get("index") or {}).get("generation") == 2
                         and _status(status_file)["index"], 40, what="generation 2 in the running sensor")
        assert index["trails"] == published_trails and index["reload_failures"] == 0
        assert sensor_trails.read_bytes() == published.read_bytes()
        client = logged_in(server, "admin")
        wait_for(lambda: any(r["index_generation"] == 2 for r in client.get_json(REMOTE)[1]["sensors"]), 20,
                 what="generation 2 in the heartbeat")

        async def corrupt() -> None:
            import nats as nats_py
            from nats.js.api import ObjectMeta

            from engine.ship.trails import OBJECT_NAME, digest_of

            nc = await nats_py.connect(broker.url, user="collector", password=PASSWORDS["collector"])
            obs = await nc.jetstream().object_store("maltrail-trails")
            data = published.read_bytes()
            await obs.put(OBJECT_NAME, data[:-100] + b"\0" * 100,
                          meta=ObjectMeta(name=OBJECT_NAME, description=digest_of(data + b"x")))
            await nc.close()

        asyncio.run(corrupt())
        wait_for(lambda: "digest mismatch" in (_status(ship_file).get("trails") or {}).get("last_error", ""), 20,
                 what="the corrupt object refused")
        assert sensor_trails.read_bytes() == published.read_bytes()
        broker.stop(kill=True)
        wait_for(lambda: not _status(ship_file).get("connected"), 20, what="the shipper to see NATS gone")
        wait_for(lambda: "keeping the last good trail index" in
                 (_status(ship_file).get("trails") or {}).get("last_error", ""), 20, what="the feed to say so")
        shown = subprocess.run([sys.executable, "-m", "engine.cli", "status", "-c", str(config)],
                               capture_output=True, text=True, timeout=60)
        assert "NOT connected" in shown.stdout and "keeping the last good trail index" in shown.stdout, shown.stdout
        assert "generation 2" in shown.stdout
    finally:
        sensor.terminate()
        sensor.communicate(timeout=60)
        server.stop()
        broker.stop(kill=True)


@needs_nats
def test_udp_intake_allowlist_and_age_bound(tmp_path: Path) -> None:
    broker = Nats(tmp_path, users_block([])).start()
    port = free_port()
    config = server_config(tmp_path, [broker.url], udp_listen=f"127.0.0.1:{port}", udp_allow=["127.0.0.1/32"],
                           udp_max_age_days=2)
    server = start_collecting_server(tmp_path, config)
    today = dt.date.today()
    line = f'"{today} 10:00:00.000001" legacy 10.0.0.5 1234 198.51.100.66 80 TCP IP 198.51.100.66 "bad" (static)'
    old = line.replace(str(today), str(today - dt.timedelta(days=3)))
    try:
        client = logged_in(server, "admin")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.sendto(f"{int(time.time())} {line}".encode(), ("127.0.0.1", port))
            s.sendto(line.replace("bad", "naive\nforged line").encode(), ("127.0.0.1", port))
            s.sendto(old.encode(), ("127.0.0.1", port))
            s.sendto(b"garbage", ("127.0.0.1", port))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.2", 0))
            s.sendto(line.encode(), ("127.0.0.1", port))
        stats = wait_for(lambda: (c := client.get_json(REMOTE)[1]["collector"])["udp_not_allowed"] == 1
                         and c["udp_accepted"] == 2 and c["udp_too_old"] == 1 and c, 20, what="UDP counters")
        assert stats["udp_garbage"] == 1 and stats["udp_last_refused"] == "127.0.0.2"
        lines = (tmp_path / "server" / f"{today}.log").read_text().splitlines()
        assert lines == [line, line.replace("bad", "naive forged line")]
        assert not (tmp_path / "server" / f"{today - dt.timedelta(days=3)}.log").exists()
    finally:
        server.stop()
        broker.stop(kill=True)


def test_udp_intake_needs_an_allowlist(tmp_path: Path) -> None:
    config = tmp_path / "m.toml"
    config.write_text(f'[server]\nlog_dir = "{tmp_path}"\n[collect]\nservers = ["nats://127.0.0.1:1"]\n'
                      'udp_listen = "127.0.0.1:8337"\n')
    run = subprocess.run([sys.executable, "-m", "engine.cli", "server", "-c", str(config), "--users",
                          str(tmp_path / "u.json")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "[collect] udp_allow" in run.stderr


def test_no_section_no_nats(tmp_path: Path) -> None:
    """Without [ship] / [collect] a sensor run and a server start import nothing of NATS."""
    capture = tmp_path / "c.pcap"
    mixed_capture(capture, 2000, seed=1, trail_ips=DEMO_TRAIL_IPS)
    index = tmp_path / "t.mtidx"
    build_index_file([str(data_file("demo_trails.csv"))], index)
    code = (
        "import sys\nfrom engine.cli import main\n"
        f"rc = main(['sensor', '-r', {str(capture)!r}, '--trails', {str(index)!r}, '--log-dir', {str(tmp_path)!r}])\n"
        "from webui.app import build_app, make_context\nfrom engine.config import load_configs\n"
        "from webui.settings import resolve\n"
        f"s = resolve(*load_configs(None), log_dir={str(tmp_path)!r}, users={str(tmp_path / 'u.json')!r})\n"
        "build_app(make_context(s))\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'nats' or m in ('engine.ship.shipper', "
        "'engine.ship.collector', 'engine.ship.trails', 'engine.ship.natsconn', 'engine.ship.udp')]\n"
        "assert rc == 0 and not bad, bad\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert not (tmp_path / ".ship").exists()


def test_deployment_doc_lists_the_tested_permissions() -> None:
    """The permission block in docs/DEPLOYMENT.md is the one the tests give nats-server."""
    from engine.config import NatsSettings
    from engine.ship.natsconn import sensor_permissions

    text = (Path(__file__).resolve().parents[1] / "docs" / "DEPLOYMENT.md").read_text()
    allowed = sensor_permissions(NatsSettings(), "sensor-a")
    for subject in allowed["publish"]["allow"] + allowed["subscribe"]["allow"]:
        assert f'"{subject}"' in text, subject
    for section in ("## 1. Single host", "## 2. Many sensors, one server", "## 3. Central site on a three-node"):
        assert section in text


@needs_nats
def test_token_credentials(tmp_path: Path) -> None:
    """`token_file`: nats-server's token authorization (one token per server, so not per sensor:
    per-sensor credentials are users or NKeys); a wrong token is refused and said."""
    from nats_support import write_config
    from ship_support import events, start_shipper, stop, wait_collected, write_events

    token = tmp_path / "token"
    token.write_text("s3cret-token-1\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    broker = Nats(tmp_path, [], authorization={"token": "s3cret-token-1"}).start()
    collect = {"servers": [broker.url], "token_file": str(token)}
    server_toml = write_config(tmp_path / "server.toml", {"server": {"log_dir": str(tmp_path / "server")},
                                                          "collect": collect})
    good = write_config(tmp_path / "alpha.toml", {"sensor": {"name": "alpha", "log_dir": str(tmp_path / "alpha")},
                                                  "ship": {"servers": [broker.url], "token_file": str(token)}})
    bad = write_config(tmp_path / "beta.toml", {"sensor": {"name": "beta", "log_dir": str(tmp_path / "beta")},
                                                "ship": {"servers": [broker.url], "token_file": str(wrong)}})
    server = start_collecting_server(tmp_path, server_toml)
    shippers = [start_shipper(good), start_shipper(bad)]
    try:
        write_events(tmp_path / "alpha", "alpha", [events(100, 0)])
        write_events(tmp_path / "beta", "beta", [events(100, 0)])
        assert len(next(iter(wait_collected(tmp_path, "alpha", 100).values()))) == 100
        status = tmp_path / "beta" / ".ship" / "status.json"
        wait_for(lambda: "credentials" in _status(status).get("last_error", ""), 30, what="the wrong token refused")
    finally:
        for proc in shippers:
            stop(proc)
        server.stop()
        broker.stop(kill=True)


@needs_nats
def test_trail_object_store_survives_the_loss_of_its_leader(tmp_path: Path) -> None:
    """A three-node cluster, the trail object store replicated three times: the node leading it is
    killed once the server has published an index; a sensor that starts after the loss still gets
    that index from the other two nodes, and a generation published after the loss reaches it too."""
    import os

    from ship_support import sensor_config, start_shipper, stop

    from engine.config import NatsSettings
    from engine.ship.trails import OBJECT_NAME, digest_of

    nodes = start_cluster(tmp_path, users_block(["alpha"]))
    urls = [n.url for n in nodes]
    generations = []
    for extra in ("evil-a.example", "evil-b.example"):
        csv = tmp_path / f"{extra}.csv"
        csv.write_text(data_file("demo_trails.csv").read_text() + f"{extra},malware (feed test),(static)\n")
        build_index_file([str(csv)], tmp_path / f"{extra}.mtidx")
        generations.append((tmp_path / f"{extra}.mtidx").read_bytes())
    published = tmp_path / "server-trails.mtidx"
    published.write_bytes(generations[0])
    sensor_trails = tmp_path / "sensor-trails.mtidx"
    build_index_file([str(data_file("demo_trails.csv"))], sensor_trails)
    bucket = NatsSettings().trails_bucket

    async def store_state(url: str) -> tuple[str | None, str | None, int]:
        """(published digest, leader node, replicas) of the trail object store, read via `url`."""
        import nats as nats_py

        nc = await nats_py.connect(url, user="collector", password=PASSWORDS["collector"])
        try:
            js = nc.jetstream()
            info = await js.stream_info(f"OBJ_{bucket}")
            digest = (await (await js.object_store(bucket)).get_info(OBJECT_NAME)).description
            return digest, info.cluster.leader if info.cluster else None, info.config.num_replicas or 0
        except Exception:
            return None, None, 0
        finally:
            await nc.close()

    server = start_collecting_server(tmp_path, server_config(tmp_path, urls, replicas=3, publish_trails=str(published)))
    shipper = None
    try:
        digest, leader, replicas = wait_for(lambda: (s := asyncio.run(store_state(urls[0])))[0] == digest_of(
            generations[0]) and s[1] and s, 60, 0.5, what="the first index in the replicated store")
        assert replicas == 3
        victim = next(n for n in nodes if n.name == leader)
        victim.stop(kill=True)
        shipper = start_shipper(sensor_config(tmp_path, "alpha", urls, follow_trails=True, trails_poll_seconds=1,
                                              sensor={"trails": str(sensor_trails)}))
        wait_for(lambda: sensor_trails.read_bytes() == generations[0], 60, 0.5,
                 what="the index fetched from the two nodes left")
        tmp = published.with_name(".next.mtidx")
        tmp.write_bytes(generations[1])
        os.replace(tmp, published)
        wait_for(lambda: sensor_trails.read_bytes() == generations[1], 60, 0.5,
                 what="a generation published after the loss")
        survivor = next(n for n in nodes if n is not victim)
        assert asyncio.run(store_state(survivor.url))[0] == digest_of(generations[1])
    finally:
        if shipper is not None:
            stop(shipper)
        server.stop()
        for node in nodes:
            node.stop(kill=True)
