"""`maltrail selftest`: passes on a good setup (the canary reaches the log and real receivers), and
fails with the right line for a missing index, an empty index, an unwritable log directory, an
unreachable output and an interface without capture rights (the last two run with capabilities
dropped by setpriv, since root bypasses file modes and may always capture)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from receivers import StreamReceiver, WebhookReceiver

from engine.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, trails: str, outputs: str = "", log_dir: Path | None = None) -> Path:
    config = tmp_path / "maltrail.toml"
    config.write_text(f'[sensor]\nname = "probe-1"\ntrails = "{trails}"\nlog_dir = "{log_dir or tmp_path / "logs"}"\n'
                      + outputs)
    return config


def _trails(tmp_path: Path, text: str = "66.66.66.66,malware (test),(static)\n") -> Path:
    path = tmp_path / "trails.csv"
    path.write_text(text)
    return path


def _selftest(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, str]]:
    code = main(["selftest", *args])
    lines = capsys.readouterr().out.splitlines()
    return code, {line[6:23].strip(): line[:5].strip() + " " + line[23:] for line in lines}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_good_setup_passes_and_the_canary_reaches_every_output(tmp_path: Path, capsys) -> None:
    tcp, hook = StreamReceiver("lines"), WebhookReceiver()
    outputs = (f'[[output]]\ntype = "json"\nname = "siem"\naddress = "{tcp.address}"\nprotocol = "tcp"\n'
               f'[[output]]\ntype = "webhook"\nname = "chat"\nurl = "{hook.url}"\n')
    try:
        code, lines = _selftest(capsys, "-c", str(_config(tmp_path, str(_trails(tmp_path)), outputs)))
        docs = [json.loads(x) for x in tcp.wait_for(1)]
    finally:
        tcp.stop()
        hook.stop()
    assert code == 0, lines
    assert [k for k, v in lines.items() if not v.startswith(("ok", "skip"))] == []
    assert set(lines) == {"config", "index", "capture", "log_dir", "output siem", "output chat", "canary log",
                          "canary siem", "canary chat"}
    assert docs[0]["threat"]["indicator"]["description"] == "maltrail selftest canary"
    assert hook.bodies()[0]["severity"] == "high"
    log = next((tmp_path / "logs").glob("*.log")).read_text()
    assert "maltrail selftest canary" in log


def test_missing_index(tmp_path: Path, capsys) -> None:
    code, lines = _selftest(capsys, "-c", str(_config(tmp_path, str(tmp_path / "nope.mtidx"))))
    assert code == 1
    assert lines["index"].startswith("FAIL") and "does not exist" in lines["index"]
    assert lines["canary"].startswith("FAIL")


@pytest.mark.parametrize("name", ["trails.mtidx", "trails.csv"])
def test_empty_index(tmp_path: Path, capsys, name: str) -> None:
    """An index file truncated to nothing, or a trail source without a single row."""
    (tmp_path / name).write_text("")
    code, lines = _selftest(capsys, "-c", str(_config(tmp_path, str(tmp_path / name))))
    assert code == 1
    assert lines["index"].startswith("FAIL") and "empty" in lines["index"] and "no trails" in lines["index"]


def test_index_whose_every_trail_is_whitelisted(tmp_path: Path, capsys) -> None:
    code, lines = _selftest(capsys, "-c", str(_config(tmp_path, str(_trails(tmp_path, "8.8.8.8,x (test),(static)\n")))))
    assert code == 1
    assert lines["index"].startswith("FAIL") and "no trail" in lines["index"]


def test_unreachable_output(tmp_path: Path, capsys) -> None:
    port = _free_port()
    outputs = (f'[[output]]\ntype = "syslog"\nname = "siem"\naddress = "127.0.0.1:{port}"\nprotocol = "tcp"\n'
               'retries = 0\ndrain_seconds = 1\n')
    code, lines = _selftest(capsys, "-c", str(_config(tmp_path, str(_trails(tmp_path)), outputs)))
    assert code == 1
    assert lines["output siem"].startswith("FAIL") and "unreachable" in lines["output siem"]
    assert lines["canary siem"].startswith("FAIL") and "NOT delivered" in lines["canary siem"]
    assert lines["canary log"].startswith("ok")  # the log is not held hostage by a dead output


def _without_caps(caps: str) -> list[str]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to run the check without a capability")
    return ["setpriv", f"--bounding-set=-{caps.replace(',', ',-')}", f"--inh-caps=-{caps.replace(',', ',-')}", "--"]


def _run(cmd: list[str]) -> tuple[int, dict[str, str]]:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    return done.returncode, {line[6:23].strip(): line[:5].strip() + " " + line[23:]
                             for line in done.stdout.splitlines()}


def test_unwritable_log_directory(tmp_path: Path) -> None:
    prefix = _without_caps("dac_override,dac_read_search")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    config = _config(tmp_path, str(_trails(tmp_path)), log_dir=locked / "logs")
    code, lines = _run([*prefix, sys.executable, "-m", "engine.cli", "selftest", "-c", str(config)])
    assert code == 1, lines
    assert lines["log_dir"].startswith("FAIL") and "not writable" in lines["log_dir"]
    assert lines["index"].startswith("ok")


def test_interface_without_capture_rights(tmp_path: Path, capsys) -> None:
    prefix = _without_caps("net_raw,net_admin")
    config = _config(tmp_path, str(_trails(tmp_path)))
    code, lines = _run([*prefix, sys.executable, "-m", "engine.cli", "selftest", "-c", str(config), "-i", "lo"])
    assert code == 1, lines
    assert lines["capture"].startswith("FAIL") and "permission" in lines["capture"].lower()
    # with the rights (root here), the same interface passes
    code, lines = _selftest(capsys, "-c", str(config), "-i", "lo")
    assert code == 0 and lines["capture"].startswith("ok"), lines
