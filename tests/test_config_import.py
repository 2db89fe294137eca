"""`maltrail config import`: Maltrail's shipped maltrail.conf (vendored in tests/fixtures/maltrail)
and a file with the newer options become a maltrail.toml that loads; every option is reported as
mapped, n/a or unsupported; and an imported LOG_SERVER really feeds a Maltrail-style collector."""

from __future__ import annotations

import tomllib
from pathlib import Path

from receivers import UdpReceiver

from engine import traffic as t
from engine.cli import main
from engine.config import load_configs, load_update_config
from engine.index.build import build_index_file
from engine.migrate import import_config, read_maltrail_conf, render
from engine.pcapio import PcapWriter

SHIPPED = Path(__file__).resolve().parent / "fixtures" / "maltrail" / "maltrail.conf"
STATUSES = {"mapped", "n/a", "unsupported"}


def _report(imported) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for status, option, text in imported.report:
        out.setdefault(option, []).append((status, text))
    return out


def test_shipped_conf_every_option_accounted_for(tmp_path: Path, capsys) -> None:
    options = read_maltrail_conf(SHIPPED.read_text())
    assert {"HTTP_ADDRESS", "USERS", "MONITOR_INTERFACE", "CAPTURE_FILTER", "LOG_DIR"} <= set(options)
    assert options["USERS"] == ["admin:9ab3cd9d67bf49d01f6a2e33d0bd9bc804ddbe6ce1ff5d219c42624851db5dbc:0:0.0.0.0/0"]
    imported = import_config(SHIPPED)
    report = _report(imported)
    assert set(report) == set(options)  # every option of the file, and nothing else
    assert all(status in STATUSES for rows in report.values() for status, _ in rows)
    assert report["USERS"][0][0] == "n/a" and "maltrail user add" in report["USERS"][0][1]
    assert report["DISABLE_CPU_AFFINITY"][0][0] == "n/a"
    data = tomllib.loads(render(imported))
    assert data["server"]["listen"] == "0.0.0.0:8338"
    assert data["sensor"]["interface"] == "any" and data["sensor"]["log_dir"] == "/var/log/maltrail"
    assert data["sensor"]["bpf"].startswith("udp or icmp or (tcp and (tcp[tcpflags] == tcp-syn")
    assert data["sensor"]["custom_trails"] == [str(SHIPPED.parent / "trails" / "custom")]
    assert data["update"] == {"period": "86400", "sensor_updates": True}
    assert data["sensor"]["trails"] == "/var/lib/maltrail/trails.mtidx"
    out = tmp_path / "maltrail.toml"
    assert main(["config", "import", str(SHIPPED), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "n/a          USERS" in printed and f"written: {out}" in printed
    sensor, server = load_configs(out)
    assert sensor.interface == "any" and server.listen == "0.0.0.0:8338"
    assert load_update_config(out).sensor_updates is True
    assert main(["config", "import", str(SHIPPED), "-o", str(out)]) == 2  # never overwritten silently
    assert "exists (--force replaces it)" in capsys.readouterr().err


NEWER = """\
HTTP_ADDRESS ::1
HTTP_PORT 9338
USE_SSL true
SSL_PEM misc/server.pem
FAIL2BAN_ALLOWLIST 127.0.0.1
UDP_ADDRESS 0.0.0.0
UDP_PORT 8337
PROCESS_COUNT 4
STATS_ADDRESS 127.0.0.1:9108
DISABLED_FEEDS turris, ciarmy, policeman, myip, alienvault, nosuchfeed
DISABLED_TRAILS_INFO_REGEX known attacker|tor exit node
IP_MINIMUM_FEEDS 3
CUSTOM_TRAILS_URL www.example.com/custom.txt; https://example.org/b.txt
SENSOR_NAME edge-1
LOG_SERVER {log_server}
SYSLOG_SERVER 127.0.0.1:514, [::1]:6514
LOGSTASH_SERVER 127.0.0.1:5000
ALERT_WEBHOOK_URL https://hooks.example.net/x
ALERT_SEVERITY medium
ALERT_THROTTLE 60
ALERT_FORMAT {{"text": "{{trail}}"}}
DISABLE_LOCAL_LOG_STORAGE false
DISABLED_HEURISTICS port_scanning, not_a_heuristic
SCAN_WINDOW 60
IGNORE_EVENTS_REGEX 10\\.0\\.0\\.9
USE_FAST_PREFILTER true
FROBNICATE yes
LOG_DIR {log_dir}
"""


def test_newer_options_outputs_and_unknown_keys(tmp_path: Path) -> None:
    conf = tmp_path / "maltrail.conf"
    conf.write_text(NEWER.format(log_server="127.0.0.1:8337", log_dir=tmp_path / "logs"))
    imported = import_config(conf)
    report = _report(imported)
    assert set(report) == set(read_maltrail_conf(conf.read_text()))
    data = tomllib.loads(render(imported))
    assert data["server"]["listen"] == "[::1]:9338"
    assert data["server"]["tls_cert"] == data["server"]["tls_key"] == str(tmp_path / "misc" / "server.pem")
    assert data["sensor"]["workers"] == 4 and data["sensor"]["metrics"] == "127.0.0.1:9108"
    assert data["sensor"]["name"] == "edge-1" and data["sensor"]["scan_window"] == 60
    assert data["sensor"]["disabled_heuristics"] == ["port_scanning"]
    assert data["sensor"]["disabled_trails_info_regex"] == "known attacker|tor exit node"
    assert data["update"]["disabled_feeds"] == ["turris", "ciarmy", "policeman", "myip", "alienvault"]
    assert data["update"]["custom_urls"] == ["http://www.example.com/custom.txt", "https://example.org/b.txt"]
    assert data["output"] == [
        {"type": "webhook", "url": "https://hooks.example.net/x", "min_severity": "medium", "throttle_seconds": 60},
        {"type": "maltrail", "address": "127.0.0.1:8337", "protocol": "udp"},
        {"type": "syslog", "address": "127.0.0.1:514", "protocol": "udp"},
        {"type": "syslog", "address": "[::1]:6514", "protocol": "udp"},
        {"type": "json", "address": "127.0.0.1:5000", "protocol": "udp"}]
    statuses = {option: {s for s, _ in rows} for option, rows in report.items()}
    assert statuses["FROBNICATE"] == {"unsupported"} and statuses["UDP_ADDRESS"] == {"unsupported"}
    assert statuses["DISABLED_FEEDS"] == {"mapped", "unsupported"}  # nosuchfeed
    assert statuses["DISABLED_HEURISTICS"] == {"mapped", "unsupported"}
    assert statuses["ALERT_FORMAT"] == {"unsupported"} and statuses["FAIL2BAN_ALLOWLIST"] == {"n/a"}
    assert statuses["USE_FAST_PREFILTER"] == {"n/a"}


def test_an_imported_log_server_feeds_a_maltrail_collector(tmp_path: Path) -> None:
    """The translated file, used as it is, sends Maltrail's datagram to the LOG_SERVER address."""
    collector = UdpReceiver()
    conf = tmp_path / "maltrail.conf"
    conf.write_text(f"SENSOR_NAME edge-1\nLOG_SERVER {collector.address}\nLOG_DIR {tmp_path / 'logs'}\n")
    out = tmp_path / "maltrail.toml"
    assert main(["config", "import", str(conf), "-o", str(out)]) == 0
    (tmp_path / "trails.csv").write_text("66.66.66.66,malware (test),(static)\n")
    build_index_file([str(tmp_path / "trails.csv")], tmp_path / "trails.mtidx")
    with PcapWriter(tmp_path / "c.pcap") as w:
        w.write(t.ethernet(t.tcp4("10.0.0.5", "66.66.66.66", 40000, 443, t.SYN)), 1.7e9)
    try:
        assert main(["sensor", "-c", str(out), "--trails", str(tmp_path / "trails.mtidx"), "-r",
                     str(tmp_path / "c.pcap")]) == 0
        got = collector.wait_for(1)
    finally:
        collector.stop()
    sec, line = got[0].decode().split(" ", 1)
    assert sec == "1700000000" and " edge-1 10.0.0.5 40000 66.66.66.66 443 TCP IP 66.66.66.66 " in line
    assert line == next((tmp_path / "logs").glob("*.log")).read_text()
