"""packaging/: the systemd units pass `systemd-analyze verify` without a warning, are hardened
(dedicated user, only the capabilities capture needs, read-only system, private tmp; exposure
checked by `systemd-analyze security --offline`), and their command lines parse."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
UNITS = ("maltrail-sensor.service", "maltrail-server.service", "maltrail-update.service", "maltrail-update.timer")
SERVICES = UNITS[:3]
INSTALLED = "/usr/local/bin/maltrail"

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze is not installed (scripts/setup.sh installs systemd)")


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "packaging" / name)
    return parser


@pytest.fixture()
def units(tmp_path: Path) -> Path:
    """Copies whose ExecStart names this checkout's `maltrail` (verify wants an existing binary)."""
    here = str(Path(sys.executable).with_name("maltrail"))
    for name in UNITS:
        text = (ROOT / "packaging" / name).read_text().replace(INSTALLED, here)
        (tmp_path / name).write_text(text)
    return tmp_path


def _verify(folder: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", *names], cwd=folder, capture_output=True, text=True,
                          timeout=120)


def test_units_verify_without_a_warning(units: Path) -> None:
    done = _verify(units, *UNITS)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    (units / "typo.service").write_text("[Service]\nExecStart=/bin/true\nProtectSystem=sometimes\n")
    assert "protect system" in _verify(units, "typo.service").stderr.lower()  # the check does catch mistakes


@pytest.mark.parametrize("name", SERVICES)
def test_units_are_hardened(name: str, units: Path) -> None:
    service = _unit(name)["Service"]
    assert service["User"] == "maltrail" and service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict" and service["PrivateTmp"] == "yes"
    assert service["ProtectHome"] == "yes"
    wanted = "CAP_NET_RAW CAP_NET_ADMIN" if name == "maltrail-sensor.service" else ""
    assert service["CapabilityBoundingSet"] == wanted and service["AmbientCapabilities"] == wanted
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=30", name], cwd=units,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr  # exposure 3.0 or less ("OK")


@pytest.mark.parametrize("name", SERVICES)
def test_command_lines_parse(name: str) -> None:
    argv = shlex.split(_unit(name)["Service"]["ExecStart"])
    assert argv[0] == INSTALLED
    args = build_parser().parse_args(argv[1:])
    assert args.config == "/etc/maltrail/maltrail.toml"


def test_sensor_stop_is_the_graceful_group_sigterm() -> None:
    service = _unit("maltrail-sensor.service")["Service"]
    assert service["KillMode"] == "control-group" and service.get("KillSignal", "SIGTERM") == "SIGTERM"
    assert _unit("maltrail-update.timer")["Timer"]["Persistent"] == "true"
