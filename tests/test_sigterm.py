"""`systemctl stop` sends SIGTERM to every process of the unit at once: the sensor must still stop
gracefully (drain, summary, exit 0) and no event of a packet it read may be lost. Here during a
replay; tests/test_live_veth.py does the same during a live capture."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import traffic as t
from engine.index.build import build_index_file
from engine.pcapio import PcapWriter

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000.0
HIT_EVERY = 50


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An index with one trail, and 1.5 M packets where every 50th is a SYN to it (its own source
    port, so no two events collapse)."""
    work = tmp_path_factory.mktemp("sigterm")
    (work / "trails.csv").write_text("66.66.66.66,malware (test),(static)\n")
    build_index_file([str(work / "trails.csv")], work / "trails.mtidx")
    filler = t.ethernet(t.udp4("10.0.0.1", "10.0.0.2", 5000, 6000, bytes(64)))
    with PcapWriter(work / "c.pcap") as w:
        for i in range(1_500_000):
            frame = t.ethernet(t.tcp4("10.0.0.66", "66.66.66.66", i // HIT_EVERY % 60000 + 1, 443, t.SYN,
                                      seq=i)) if i % HIT_EVERY == 0 else filler
            w.write(frame, T0 + i / 1e5)
    return work / "trails.mtidx", work / "c.pcap"


def test_group_sigterm_during_a_replay_drains_and_loses_no_event(setup: tuple[Path, Path], tmp_path: Path) -> None:
    index, capture = setup
    logs = tmp_path / "logs"
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "sensor", "--trails", str(index), "-r",
                                 str(capture), "--log-dir", str(logs), "--workers", "2"], cwd=ROOT, stdout=out,
                                stderr=err, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (logs / "sensor-status.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "err").read_text()
        time.sleep(0.02)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)  # every process of the group, as systemd does
    assert proc.wait(timeout=120) == 0, (tmp_path / "err").read_text()
    out_text = (tmp_path / "out").read_text()
    assert "summary: (interrupted)" in out_text, out_text
    assert "died" not in (tmp_path / "err").read_text()
    packets = int(next(line.split()[1] for line in out_text.splitlines() if line.startswith("  packets ")))
    assert 0 < packets < 1_500_000, "the signal must arrive mid-replay"
    # a replay never drops: the packets processed are the capture's first `packets`, and every
    # trail hit among them is in the log
    lines = [line for f in sorted(logs.glob("*.log")) for line in f.read_text().splitlines()]
    expected = (packets + HIT_EVERY - 1) // HIT_EVERY
    assert len(lines) == expected, (len(lines), expected, packets)
