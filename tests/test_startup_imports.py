"""What the sensor's start-up path imports: the fork server and the entry point are on the critical
path of every `maltrail sensor` start, so modules kept off it stay off it (each is 5-30 ms)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code` in this checkout."""
    done = subprocess.run([sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_the_fork_server_imports_only_what_the_workers_run() -> None:
    loaded = _modules_after("from multiprocessing.forkserver import main\nimport workers.preload")
    assert {"numpy", "workers.worker", "hyperscan"} <= loaded
    kept_off = {"engine.aggregator", "engine.heuristics", "engine.config", "engine.cli", "argparse", "tomllib",
                "ssl", "urllib.request", "http.client", "cryptography", "aiohttp"}
    assert not kept_off & loaded, sorted(kept_off & loaded)


def test_the_aggregator_imports_no_configuration_code() -> None:
    """The aggregator imports its own modules after its fork, on the start-up path: not the
    configuration's dataclasses and TOML parser (about 15 ms)."""
    loaded = _modules_after("from multiprocessing.forkserver import main\nimport workers.preload\n"
                            "import engine.aggregator, engine.outputs.process")
    assert "engine.heuristics" in loaded
    assert not {"engine.config", "tomllib", "argparse"} & loaded


def test_the_entry_point_imports_nothing_heavy_before_the_server_starts() -> None:
    loaded = _modules_after("import engine.launch")
    assert not {"typing", "numpy", "engine.cli", "multiprocessing"} & loaded


def test_outputs_import_ssl_and_urllib_only_when_a_transport_needs_them() -> None:
    loaded = _modules_after("import engine.outputs.transports")
    assert not {"ssl", "urllib.request"} & loaded
    used = _modules_after("from engine.outputs.spec import OutputSpec\n"
                          "from engine.outputs.transports import tls_context\n"
                          "tls_context(OutputSpec(type='syslog', name='s', protocol='tls'))")
    assert "ssl" in used


def test_the_sensor_process_imports_no_dashboard_settings() -> None:
    """The command line registers the dashboard's commands; their settings (severity rules,
    address scopes) are imported when the dashboard runs, not on every sensor start."""
    loaded = _modules_after("import engine.cli, engine.sensor")
    assert "webui.cli" in loaded
    assert not {"webui.settings", "webui.netaddr", "engine.severity"} & loaded, sorted(loaded)
