"""`ua:<agent>` trails end to end: a request's exact User-Agent, on any TCP port, through the real
pipeline (`run_sensor` on a generated capture), reported as type UA with the trail's info."""

from __future__ import annotations

from pathlib import Path

from engine import traffic as t
from engine.config import SensorConfig
from engine.index.build import build_index_file
from engine.index.mapped import TrailIndex
from engine.pcapio import PcapWriter
from engine.sensor import run_sensor

T0 = 1_700_000_000.0
AGENTS = [f"EvilAgent-{i}/2.{i} (X11; Test {i})" for i in range(20)]
PORTS = [80, 8080, 443, 3128, 8000, 1234, 65000, 81, 8888, 9000]


def test_listed_user_agents_are_reported_exactly(tmp_path: Path) -> None:
    rows = [f"ua:{agent},malware agent {i} (test),(static)" for i, agent in enumerate(AGENTS)]
    (tmp_path / "trails.csv").write_text("\n".join(rows) + "\n")
    index = tmp_path / "t.mtidx"
    build_index_file([str(tmp_path / "trails.csv")], index)
    assert TrailIndex(index).check(f"ua:{AGENTS[3]}").found  # what `maltrail check` answers
    frames = []
    for i, agent in enumerate(AGENTS):
        req = t.http_request("GET", f"/page{i}", host=f"site{i}.example", user_agent=agent)
        frames.append(t.tcp4("10.0.0.66", "198.51.100.7", 50000 + i, PORTS[i % len(PORTS)], t.PSH | t.ACK, req))
    for i, agent in enumerate((f"Mozilla/5.0 {AGENTS[3]}", f"{AGENTS[4]} extra", AGENTS[5][:-1])):  # not exact
        req = t.http_request("GET", "/", host="other.example", user_agent=agent)
        frames.append(t.tcp4("10.0.0.67", "198.51.100.7", 51000 + i, 8080, t.PSH | t.ACK, req))
    capture = tmp_path / "ua.pcap"
    with PcapWriter(capture) as w:
        for n, frame in enumerate(frames):
            w.write(t.ethernet(frame), T0 + n)
    log_dir = tmp_path / "logs"
    run_sensor(SensorConfig(name="t", trails=str(index), log_dir=str(log_dir), workers=1), [capture])
    lines = [line for f in sorted(log_dir.glob("*.log")) for line in f.read_text().splitlines()]
    hits = [line for line in lines if ' TCP UA "ua:' in line]
    assert len(hits) == 20, "\n".join(lines)
    for i, agent in enumerate(AGENTS):
        assert any(f'"ua:{agent}" "malware agent {i} (test)" (static)' in line
                   and f" {PORTS[i % len(PORTS)]} TCP " in line for line in hits), agent
    assert not any("10.0.0.67" in line for line in hits)
