"""The `maltrail` command as users call it: trails build, check, sensor (files and live)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import traffic as t
from engine.cli import main
from engine.pcapio import CaptureError, LiveCapture, PcapWriter

ROOT = Path(__file__).resolve().parents[1]


def _static(tmp_path: Path) -> Path:
    root = tmp_path / "static"
    (root / "malware").mkdir(parents=True)
    (root / "malware" / "asyncrat.txt").write_text("# AsyncRAT\nevil-rat.example\n66.66.66.66\n6.6.6.6:8443\n")
    (root / "mass_scanner.txt").write_text("203.0.113.0/24\n")
    return root


def test_build_then_check_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.mtidx"
    assert main(["trails", "build", "--from", str(_static(tmp_path)), "--out", str(out)]) == 0
    assert "3" in capsys.readouterr().out or out.exists()
    assert main(["check", "--trails", str(out), "--json", "www.evil-rat.example", "203.0.113.9",
                 "6.6.6.6:8443", "clean.example"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [set(r) for r in results] == [{"query", "found", "trail", "info", "reference"}] * 4
    assert results[0] == {"query": "www.evil-rat.example", "found": True, "trail": "evil-rat.example",
                          "info": "asyncrat (malware)", "reference": "(static)"}
    assert results[1]["trail"] == "203.0.113.0/24" and results[1]["info"] == "mass scanner"
    assert results[2]["trail"] == "6.6.6.6:8443"
    assert results[3] == {"query": "clean.example", "found": False, "trail": None, "info": None, "reference": None}


def test_check_text_output_and_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "trails.csv"
    csv.write_text("evil.com,malware (x),(static)\n")
    assert main(["check", "--trails", str(csv), "a.evil.com"]) == 0
    assert "found      a.evil.com  trail=evil.com  info=malware (x)  reference=(static)" in capsys.readouterr().out
    assert main(["check", "--trails", str(csv), "good.com"]) == 1
    assert "not found  good.com" in capsys.readouterr().out


@pytest.mark.parametrize(("setup", "message"), [
    ("empty", "no trail"),
    ("missing", "does not exist"),
])
def test_build_refuses_bad_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str,
                                   message: str) -> None:
    src = tmp_path / "src"
    if setup == "empty":
        src.mkdir()
        (src / "empty.txt").write_text("# nothing\n")
    out = tmp_path / "t.mtidx"
    assert main(["trails", "build", "--from", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maltrail: error: ") and err.count("\n") == 1
    assert not out.exists()


def test_failed_rebuild_keeps_the_last_good_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.mtidx"
    assert main(["trails", "build", "--from", str(_static(tmp_path)), "--out", str(out)]) == 0
    good = out.read_bytes()
    assert main(["trails", "build", "--from", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert out.read_bytes() == good


def test_bad_config_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "m.toml"
    cfg.write_text("[sensor]\nworkers = -1\n")
    assert main(["sensor", "-c", str(cfg), "-r", "x.pcap"]) == 2
    assert "[sensor] workers: -1 is out of range" in capsys.readouterr().err


def _live_sensor(tmp_path: Path, trail: str, bpf: str, workers: int = 1) -> subprocess.Popen[str]:
    """A `maltrail sensor -i lo` run, returned once it is capturing (skips where capture is refused)."""
    try:
        LiveCapture("lo").close()
    except CaptureError as exc:
        pytest.skip(f"live capture not permitted here: {exc}")
    csv = tmp_path / "trails.csv"
    csv.write_text(f"{trail},malware (live test),(static)\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "sensor", "--trails", str(csv), "-i", "lo", "--bpf", bpf,
         "--log-dir", str(tmp_path / "logs"), "--workers", str(workers)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "logs" / "sensor-status.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    return proc


def test_sensor_live_on_loopback(tmp_path: Path) -> None:
    port = 41000 + os.getpid() % 10000
    proc = _live_sensor(tmp_path, "127.0.0.66", f"udp and port {port}", workers=2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 0))  # 127.0.0.1 is whitelisted: its events would be dropped
        for i in range(5):
            s.sendto(b"x%d" % i, ("127.0.0.66", port))
            time.sleep(1.1)  # one per second: identical events in one second collapse
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [line for f in (tmp_path / "logs").glob("*.log") for line in f.read_text().splitlines()]
    assert len(lines) == 5
    assert all(" 127.0.0.66 " in line and '"malware (live test)"' in line and " UDP IP " in line for line in lines)
    assert "(kernel)" in out and "packets      5" in out


def test_idle_live_sensor_stops_on_ctrl_c_and_unlinks(tmp_path: Path) -> None:
    proc = _live_sensor(tmp_path, "203.0.113.66", "udp and port 9")  # no packet at all: idle capture
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "summary: (interrupted)" in out
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"maltrail_{proc.pid}_")]


def test_the_maltrail_entry_point_runs_a_sensor_and_other_commands(tmp_path: Path) -> None:
    """`engine.launch` (what the installed `maltrail` runs): the sensor, started with its fork
    server ahead of the command line, writes its events; other commands go straight through."""
    root = Path(__file__).resolve().parents[1]
    trails = tmp_path / "trails.csv"
    trails.write_text("evil-rat-test.net,test malware,(static)\n")
    capture = tmp_path / "q.pcap"
    with PcapWriter(capture) as w:
        w.write(t.ethernet(t.udp4("10.0.0.2", "10.0.0.53", 40000, 53, t.dns_query("www.evil-rat-test.net"))), 1.7e9)
    sensor = subprocess.Popen([sys.executable, "-m", "engine.launch", "sensor", "-r", str(capture), "--trails",
                               str(trails), "--log-dir", str(tmp_path / "log"), "--workers", "1"], cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "TMPDIR": str(tmp_path / "tmp")})
    (tmp_path / "tmp").mkdir()
    out, err = sensor.communicate(timeout=120)
    assert sensor.returncode == 0, err
    assert "evil-rat-test.net" in "".join(p.read_text() for p in (tmp_path / "log").glob("*.log"))
    # the sensor leaves without the interpreter's teardown: its summary still reaches a pipe, its
    # exit handlers still ran (no shared memory left, none reported leaked, multiprocessing's
    # temporary folder removed) and its exit code holds
    assert "summary:" in out and "leaked" not in err and "Warning" not in err, err
    assert not list((tmp_path / "tmp").iterdir())
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"maltrail_{sensor.pid}_")]
    failed = subprocess.run([sys.executable, "-m", "engine.launch", "sensor", "-r", str(tmp_path / "none.pcap"),
                             "--trails", str(trails), "--log-dir", str(tmp_path / "log"), "--workers", "1"], cwd=root,
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and failed.stderr.startswith("maltrail: error:"), failed.stderr
    closed = subprocess.run([sys.executable, "-m", "engine.launch", "sensor", "-r", str(capture), "--trails",
                             str(trails), "--log-dir", str(tmp_path / "log"), "--workers", "1"], cwd=root,
                            stderr=subprocess.PIPE, text=True, timeout=120, preexec_fn=lambda: os.close(1))
    assert closed.returncode == 0, closed.stderr  # started without a standard output, as a daemon may be
    # run as `python -m engine.cli`, whose children run engine.cli again: the fork server imported
    # it for them, and none of them warns about finding it imported already
    by_module = subprocess.run([sys.executable, "-m", "engine.cli", "sensor", "-r", str(capture), "--trails",
                                str(trails), "--log-dir", str(tmp_path / "log2"), "--workers", "2"], cwd=root,
                               capture_output=True, text=True, timeout=120)
    assert by_module.returncode == 0 and "Warning" not in by_module.stderr, by_module.stderr
    assert "evil-rat-test.net" in "".join(p.read_text() for p in (tmp_path / "log2").glob("*.log"))
    helped = subprocess.run([sys.executable, "-m", "engine.launch", "sensor", "--help"], cwd=root,
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "usage: maltrail sensor" in helped.stdout
    wrong = subprocess.run([sys.executable, "-m", "engine.launch", "no-such-command"], cwd=root,
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr


@pytest.mark.parametrize(("threads", "interpreters"), [(None, 1), ("2", 3)])
def test_the_entry_point_forks_its_server_only_while_it_runs_one_thread(tmp_path: Path, threads: str | None,
                                                                        interpreters: int) -> None:
    """`maltrail sensor` forks its fork server and resource tracker from the entry point rather than
    starting new interpreters (counted by a `sitecustomize` each interpreter runs); a BLAS asked for
    threads by the environment makes the process threaded once numpy is imported, and then they
    are new interpreters as before. Either way a process starts through the server, and the server
    goes with the process that started it."""
    root = Path(__file__).resolve().parents[1]
    starts = tmp_path / "starts"
    (tmp_path / "sitecustomize.py").write_text(f"open({str(starts)!r}, 'a').write('x')\n")
    code = ("import multiprocessing.forkserver as f, os\n"
            "from engine.processes import process_context, start_process_server\n"
            "start_process_server(fork=True)\n"
            "p = process_context().Process(target=os.getpid)\n"
            "p.start()\n"
            "p.join()\n"
            "print(f._forkserver._forkserver_pid, p.exitcode)")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"} | (
        {"OPENBLAS_NUM_THREADS": threads} if threads else {}) | {"PYTHONPATH": f"{tmp_path}:{root}"}
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    pid, exitcode = done.stdout.split()
    assert exitcode == "0"
    assert len(starts.read_text()) == interpreters
    deadline = time.monotonic() + 20
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), "the fork server outlived its sensor"
