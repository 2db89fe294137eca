"""`maltrail demo`: generate a realistic capture, replay it through the full pipeline, show events.

Everything the demo uses is generated or shipped with the project: the capture comes from
`engine.traffic`, the trails from the bundled demo trail set. Besides the background traffic (whose
few trail hits are IP events), a short attack scenario makes the first dashboard show every event
type and a few heuristics, from trails that can really match (no `.example` names: that TLD is
never reported): DNS, URL (host + path, path only), HTTP, User-Agent, TLS SNI and IP:port trail
hits, a port scan, a DGA burst, an NXDOMAIN flood and suspicious requests. Then (unless `listen`
is None) the dashboard serves the replay's logs until Ctrl-C, printing its URL and a one-time
admin password.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from engine import traffic as t
from engine.config import SensorConfig, ServerConfig
from engine.index.build import build_index_file
from engine.pcapio import PcapWriter
from engine.resources import data_file
from engine.sensor import run_sensor
from engine.traffic import mixed_capture

DEMO_TRAIL_IPS = ("198.51.100.66", "203.0.113.44", "192.0.2.77", "100.64.7.7")
SHOWN_EVENTS = 20
HOST, LAPTOP, RESOLVER, WEB = "10.0.0.23", "10.0.0.42", "192.0.2.53", "198.51.100.7"
SCANNER, PUBLIC_CLIENT = "203.0.113.9", "203.0.113.5"
DGA_LABELS = ("xkqwzrtplmnbvcdf", "qzxvbnmtrwplkjhg", "vbnmqwrtzplkxjdf", "mnbvcxzlkjhgfdsq", "wrtzpqxvbnmlkjhd")


def _dns_query(ts: float, name: str, client: str = HOST, sport: int = 50000) -> tuple[float, bytes]:
    return ts, t.ethernet(t.udp4(client, RESOLVER, sport, 53, t.dns_query(name)))


def _nxdomain(ts: float, name: str, client: str, sport: int) -> tuple[float, bytes]:
    payload = bytearray(t.dns_response(name, [], rcode=3))
    payload[3] = 0x83  # recursion available, NXDOMAIN: what resolvers answer
    return ts, t.ethernet(t.udp4(RESOLVER, client, 53, sport, bytes(payload)))


def _http(ts: float, path: str, host: str | None, sport: int, ua: str | None = None, client: str = HOST,
          dst: str = WEB) -> tuple[float, bytes]:
    return ts, t.ethernet(t.tcp4(client, dst, sport, 80, t.PSH | t.ACK,
                                 t.http_request("GET", path, host=host, user_agent=ua)))


def attack_frames(start: float) -> list[tuple[float, bytes]]:
    """The scenario, stamped from `start`: one hit of every kind of trail, then the heuristics."""
    frames = [
        _dns_query(start, "evil-demo.top"),
        _dns_query(start + 1, "www.evil-demo.top", sport=50001),
        _http(start + 2, "/gate.php", "payload-demo.top", 50100),
        _http(start + 3, "/malicious-login.php", "intranet-portal.net", 50101, client=LAPTOP),
        _http(start + 4, "/", "updates-demo.net", 50102, ua="DemoBot/6.6 (demo build)"),
        _http(start + 5, "/index.php?id=1%20union%20all%20select%20username,password%20from%20users",
              "shop-demo.net", 50103, client=SCANNER, dst=HOST),
        _http(start + 6, "/download?file=../../../../etc/passwd", "files-demo.net", 50104, client=SCANNER,
              dst=HOST),
        _http(start + 7, "/", "scan-demo.net", 50105, ua="masscan/1.0", client=SCANNER, dst=HOST),
        _http(start + 7.5, "http://checker-demo.net/proxy-check.php", "checker-demo.net", 50106, client=SCANNER,
              dst=HOST),
        (start + 8, t.ethernet(t.tcp4(LAPTOP, "203.0.113.30", 50400, 443, t.PSH | t.ACK,
                                      t.tls_client_hello("c2-demo.top")))),
        (start + 9, t.ethernet(t.tcp4(HOST, "6.6.6.6", 50401, 8443, t.SYN))),
    ]
    for i in range(20):  # a port scan of the web server, one port a second
        frames.append((start + 10 + i, t.ethernet(t.tcp4(SCANNER, HOST, 40000 + i, 1000 + i, t.SYN))))
    for i in range(14):  # a web scan: many first path segments on one server
        frames.append(_http(start + 11, f"/scan{i}/admin.php", "shop-demo.net", 52000 + i, client=SCANNER, dst=HOST))
    for i, label in enumerate(DGA_LABELS):  # a bot hunting for its controller: DGA names, NXDOMAIN
        frames.append(_nxdomain(start + 12 + i, f"{label}.com", LAPTOP, 51000 + i))
    for i in range(25):  # a public client flooding the resolver with names that do not exist
        frames.append(_nxdomain(start + 20 + i, f"nx{i}.flood-demo.net", PUBLIC_CLIENT, 40020))
    frames.append((start + 60, t.ethernet(t.tcp4(HOST, "192.0.2.1", 1, 2, t.ACK))))  # a later packet: last sweep
    frames.sort(key=lambda f: f[0])
    return frames


def write_attacks(path: Path, start: float) -> int:
    frames = attack_frames(start)
    with PcapWriter(path) as w:
        for ts, frame in frames:
            w.write(frame, ts)
    return len(frames)


def run_demo(out: Path, packets: int, workers: int, listen: str | None = None, mix: str = "mixed") -> int:
    out.mkdir(parents=True, exist_ok=True)
    capture = out / "demo.pcap"
    index = out / "demo-trails.mtidx"
    logs = out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    # Stamped a few minutes ago, so that the dashboard's default view (today) shows the replay.
    info = mixed_capture(capture, packets, seed=7, trail_ips=DEMO_TRAIL_IPS, start=time.time() - 300, mix=mix)
    print(f"generated {capture}: {info['packets']} packets of the {mix} mix, {info['bytes']} bytes")
    attacks = out / "demo-attacks.pcap"
    print(f"generated {attacks}: {write_attacks(attacks, time.time() - 240)} packets of an attack scenario")
    meta = build_index_file([str(data_file("demo_trails.csv"))], index)
    print(f"built {index}: {meta['counts']['entries']} demo trails")
    cfg = SensorConfig(name="demo", trails=str(index), log_dir=str(logs), workers=workers)
    summary = run_sensor(cfg, [capture, attacks])
    lines = [line for f in sorted(logs.glob("*.log")) for line in f.read_text().splitlines()]
    print(f"\nevents ({len(lines)} in {logs}):")
    for line in lines[:SHOWN_EVENTS]:
        print("  " + line)
    if len(lines) > SHOWN_EVENTS:
        print(f"  ... {len(lines) - SHOWN_EVENTS} more")
    print()
    print("\n".join(summary.lines()))
    if listen is None:
        return 0
    from webui.server import serve
    from webui.settings import resolve

    settings = resolve(cfg, ServerConfig(listen=listen))  # logs (and so users) are new each run
    print("\nstarting the dashboard (Ctrl-C to stop)")
    return serve(settings)
