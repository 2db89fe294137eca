"""`maltrail selftest`: Maltrail's `-T` (configuration check) and `--detect-test` in one preflight.

"It detects nothing" is the most common support question; this answers it before traffic does.
Each check prints one line (`ok`, `FAIL` or `skip`, its name, what was found); the exit status is
0 only if none failed. Last, a built-in capture is replayed through the full pipeline against the
configured index plus a canary trail, and the canary event must reach the log and every output.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from engine.config import ConfigError, SensorConfig, UpdateConfig, load_config, load_update_config
from engine.outputs.spec import OutputSpec

MIN_FREE_MB = 100
CANARY_IP = "198.51.100.250"
CANARY_FILE = "maltrail_selftest_canary.txt"
CANARY_INFO = "maltrail selftest canary"


@dataclass
class Check:
    name: str
    ok: bool | None  # None: not applicable here (skipped)
    detail: str

    def line(self) -> str:
        mark = "skip" if self.ok is None else "ok" if self.ok else "FAIL"
        return f"{mark:<5} {self.name:<16} {self.detail}"


def check_index(cfg: SensorConfig, ucfg: UpdateConfig, work: Path) -> Check:
    """Present, not empty, not older than twice the update period."""
    from engine.index.fileformat import read_meta
    from engine.sensor import prepare_index

    source = Path(cfg.trails).expanduser()
    if cfg.trails and source.is_file() and source.stat().st_size == 0:
        return Check("index", False, f"{cfg.trails}: the file is empty (0 bytes): no trails, nothing can be detected")
    try:
        prepared = prepare_index(cfg, work)
        meta = read_meta(prepared)
    except Exception as exc:  # noqa: BLE001 - every failure to get an index is this check's answer
        return Check("index", False, f"{cfg.trails or '(none)'}: {exc}")
    entries = int(meta.get("counts", {}).get("entries", 0))
    if entries == 0:
        return Check("index", False, f"{cfg.trails}: the index has no trails (nothing can be detected)")
    built = float(meta.get("built_at") or time.time())
    age = max(0.0, time.time() - built)
    period = ucfg.period_seconds
    detail = f"{cfg.trails}: {entries:,} trails, built {age / 3600:.1f} h ago"
    if period and age > 2 * period:
        return Check("index", False, f"{detail}: older than twice [update] period ({ucfg.period}); "
                                     "run maltrail update")
    return Check("index", True, detail)


def check_capture(cfg: SensorConfig, interface: str) -> Check:
    if not interface:
        return Check("capture", None, "no interface configured ([sensor] interface): capture files only")
    from engine.pcapio import CaptureError, LiveCapture

    try:
        LiveCapture(interface, bpf=cfg.bpf, snaplen=cfg.snaplen, promisc=cfg.promisc, buffer_size=1 << 20).close()
    except CaptureError as exc:
        return Check("capture", False, str(exc))
    return Check("capture", True, f"{interface}: capture opens" + (" (promiscuous)" if cfg.promisc else ""))


def check_log_dir(cfg: SensorConfig) -> Check:
    log_dir = Path(cfg.log_dir).expanduser()
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=log_dir, prefix=".selftest-"):
            pass
    except OSError as exc:
        return Check("log_dir", False, f"{log_dir}: not writable ({exc.strerror or exc})")
    free_mb = shutil.disk_usage(log_dir).free / (1 << 20)
    if free_mb < MIN_FREE_MB:
        return Check("log_dir", False, f"{log_dir}: only {free_mb:,.0f} MiB free (under {MIN_FREE_MB} MiB)")
    return Check("log_dir", True, f"{log_dir}: writable, {free_mb:,.0f} MiB free")


def check_output(spec: OutputSpec) -> Check:
    """A connection where the protocol has one (TCP, TLS, HTTP); a file's folder; UDP resolves."""
    name = f"output {spec.name}"
    try:
        if spec.path:
            parent = Path(spec.path).expanduser().parent
            with tempfile.NamedTemporaryFile(dir=parent, prefix=".selftest-"):
                pass
            return Check(name, True, f"{spec.path}: folder writable")
        if spec.type == "webhook":
            parts = urlsplit(spec.url)
            host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
            tls = parts.scheme == "https"
        else:
            host, port, tls = spec.host, spec.port, spec.protocol == "tls"
        if spec.type != "webhook" and spec.protocol == "udp":
            socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            return Check(name, True, f"{spec.target}: resolves (UDP: delivery is checked by the canary only "
                                     "as far as the sender can tell)")
        with socket.create_connection((host, port), timeout=spec.timeout) as sock:
            if tls:
                from engine.outputs.transports import tls_context

                with tls_context(spec).wrap_socket(sock, server_hostname=spec.tls_server_name or host):
                    pass
    except (OSError, ssl.SSLError) as exc:
        return Check(name, False, f"{spec.target}: unreachable ({exc.strerror or exc})"
                     if isinstance(exc, OSError) and exc.strerror else f"{spec.target}: unreachable ({exc})")
    return Check(name, True, f"{spec.target}: reachable")


def _canary_capture(path: Path) -> None:
    """The built-in capture: ordinary traffic and one SYN to the canary trail."""
    from engine import traffic as t
    from engine.pcapio import PcapWriter

    now = time.time()
    with PcapWriter(path) as w:
        w.write(t.ethernet(t.udp4("10.255.0.1", "10.255.0.2", 40000, 5000, b"selftest")), now)
        w.write(t.ethernet(t.tcp4("10.255.0.1", CANARY_IP, 40001, 443, t.SYN)), now + 0.001)
        w.write(t.ethernet(t.tcp4("10.255.0.1", "10.255.0.2", 40002, 80, t.SYN)), now + 0.002)


def canary_checks(cfg: SensorConfig, work: Path) -> list[Check]:
    """Replay the built-in capture with the canary trail added; the canary must be in the log
    (unless disable_local_log) and delivered to every output."""
    from engine.sensor import run_sensor

    canary_dir = work / "canary"
    canary_dir.mkdir()
    (canary_dir / CANARY_FILE).write_text(f"{CANARY_IP}\n")
    capture = work / "selftest.pcap"
    _canary_capture(capture)
    base = dataclasses.replace(cfg, interface="", workers=1, report_seconds=0, metrics="",
                               status_file=str(work / "selftest-status.json"))
    note = "configured index plus the canary trail"
    try:
        summary = run_sensor(dataclasses.replace(base, custom_trails=[*cfg.custom_trails, str(canary_dir)]),
                             [capture])
    except ConfigError:  # an index from `maltrail update` takes no extra folder: the canary alone
        note = "the canary trail alone (an index built by maltrail update takes no extra trail folder)"
        csv = work / "canary.csv"
        csv.write_text(f"{CANARY_IP},{CANARY_INFO},(custom)\n")
        summary = run_sensor(dataclasses.replace(base, trails=str(csv), custom_trails=[]), [capture])
    checks = []
    if cfg.disable_local_log:
        checks.append(Check("canary log", None, "disable_local_log: no local log to check"))
    else:
        logs = sorted(Path(cfg.log_dir).expanduser().glob("*.log"))
        found = any(CANARY_IP in line and CANARY_INFO in line for f in logs[-2:] for line in _tail(f))
        checks.append(Check("canary log", found, f"replay against {note}: the canary event is "
                            + ("in the log" if found else f"NOT in the log ({summary.status['events_written']} "
                                                            "events written)")))
    for o in summary.status.get("outputs", []):
        ok = o["sent"] >= 1 and o["dropped"] == 0
        checks.append(Check(f"canary {o['name']}", ok, f"{o['target']}: " + (
            "canary delivered" if ok else f"canary NOT delivered ({o['dropped']} dropped; {o['last_error']})")))
    return checks


def _tail(path: Path, size: int = 1 << 20) -> list[str]:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        return f.read().decode("utf-8", "replace").splitlines()


def run_selftest(config: Path | None, interface: str | None, say: Callable[[str], None] = print) -> int:
    """Print one line per check; 0 only if none failed."""
    checks: list[Check] = []

    def add(check: Check) -> Check:
        checks.append(check)
        say(check.line())
        return check

    try:
        cfg, ucfg = load_config(config), load_update_config(config)
    except ConfigError as exc:
        add(Check("config", False, str(exc)))
        return 1
    add(Check("config", True, f"{config or '(defaults)'}: valid, {len(cfg.outputs)} outputs"))
    with tempfile.TemporaryDirectory(prefix="maltrail-selftest-") as tmp:
        work = Path(tmp)
        (work / "index").mkdir()
        index = add(check_index(cfg, ucfg, work / "index"))
        add(check_capture(cfg, cfg.interface if interface is None else interface))
        log_dir = add(check_log_dir(cfg))
        for spec in cfg.outputs:
            add(check_output(spec))
        if index.ok and log_dir.ok:
            for check in canary_checks(cfg, work):
                add(check)
        else:
            add(Check("canary", False, "not replayed: the index and the log directory must pass first"))
    return 0 if all(c.ok is not False for c in checks) else 1
