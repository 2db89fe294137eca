"""SIEM outputs end to end: the sensor replays a capture and real receivers on 127.0.0.1 get CEF
over syslog (UDP, TCP, TLS with a CA made here), ECS JSON with community IDs (TCP and a file), a
webhook above a severity (throttled, retried) and Maltrail's server datagram; a receiver killed
mid-replay costs nothing in the log and its drops are counted. Formats and configuration too."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import random
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from communityid import CommunityID, FlowTuple
from receivers import StreamReceiver, UdpReceiver, WebhookReceiver, make_ca, parse_cef, parse_syslog

from engine import traffic as t
from engine.cli import main
from engine.config import ConfigError, sensor_config_from
from engine.eventlog import format_event
from engine.index.build import build_index_file
from engine.outputs.formats import cef_message, community_id, ecs_document, maltrail_datagram
from engine.outputs.handoff import batches, record
from engine.outputs.runner import BATCH_MAX
from engine.pcapio import PcapWriter
from engine.sensor import run_sensor
from engine.severity import HIGH, LOW

T0 = 1_700_000_000.0
KILL_AFTER = 5  # events a receiver gets before it is killed
TRAILS = "66.66.66.66,malware (test),(static)\n203.0.113.7,mass scanner,(static)\n"


def _community_id_reference(proto: int, src: str, dst: str, sport: int, dport: int) -> str:
    """Community ID v1 written from its specification (seed 0): the smaller endpoint first."""
    a, b = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if (a, sport) > (b, dport):
        a, b, sport, dport = b, a, dport, sport
    data = struct.pack("!H", 0) + a + b + struct.pack("!BBHH", proto, 0, sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()


def test_community_id_known_values() -> None:
    # the specification's own example flow (Zeek's and Suricata's docs print the same value)
    ev = (0, 0, "128.232.110.120", 34855, "66.35.250.204", 80, "TCP", "IP", "66.35.250.204", "x", "y")
    assert community_id(ev) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    reverse = (0, 0, "66.35.250.204", 80, "128.232.110.120", 34855, "TCP", "IP", "x", "x", "y")
    assert community_id(reverse) == community_id(ev)
    udp6 = (0, 0, "fe80::1", 5353, "2001:db8::2", 53, "UDP", "DNS", "a.b", "x", "y")
    assert community_id(udp6) == _community_id_reference(17, "fe80::1", "2001:db8::2", 5353, 53)
    assert community_id((0, 0, "10.0.0.1", None, "10.0.0.2", None, "ICMP", "IP", "x", "x", "y")) is None
    assert community_id((0, 0, "1.1.1.1,2.2.2.2", 1, "10.0.0.2", 80, "TCP", "HTTP", "x", "x", "y")) is None


def test_community_id_matches_the_communityid_package() -> None:
    """Our fast computation against the reference implementation, over flows in both directions."""
    reference = CommunityID()
    rng = random.Random(13)
    for i in range(500):
        if i % 2:
            src, dst = (str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(2))
        else:
            src, dst = (str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(2))
        if i % 7 == 0:
            dst = src  # same host: the ports decide the order
        proto, number = rng.choice([("TCP", 6), ("UDP", 17), ("SCTP", 132)])
        sport, dport = rng.randint(1, 65535), rng.randint(1, 65535)
        ev = (0, 0, src, sport, dst, dport, proto, "IP", dst, "x", "y")
        assert community_id(ev) == reference.calc(FlowTuple(number, src, dst, sport, dport)), ev


def test_cef_fields_and_escaping() -> None:
    ev = (1_700_000_000, 5000, "10.0.0.1", 1000, "dead::beef", 80, "TCP", "URL", "evil.com/a?b=c\\d",
          "malware|x (test)", "(static)")
    cef = parse_cef(cef_message(ev, "probe-1", HIGH))
    assert (cef["vendor"], cef["product"], cef["class_id"], cef["name"], cef["severity"]) == \
        ("Maltrail", "maltrail-ng", "maltrail:URL", "malware|x (test)", "8")
    ext = cef["ext"]
    assert ext["src"] == "10.0.0.1" and ext["c6a3"] == "dead::beef" and "dst" not in ext
    assert (ext["spt"], ext["dpt"], ext["proto"], ext["cat"]) == ("1000", "80", "TCP", "URL")
    assert ext["rt"] == "1700000000005"
    assert (ext["cs1Label"], ext["cs1"], ext["cs2"], ext["dvchost"]) == ("trail", "evil.com/a?b=c\\d", "(static)",
                                                                           "probe-1")
    assert parse_cef(cef_message(ev, "p", LOW))["severity"] == "3"


def test_ecs_document_fields() -> None:
    ev = (1_700_000_000, 5, "10.0.0.1", 40000, "66.66.66.66", 443, "TCP", "IPORT", "66.66.66.66:443",
          "malware (test)", "(static)")
    doc = ecs_document(ev, "probe-1", HIGH)
    assert doc["source"] == {"ip": "10.0.0.1", "port": 40000}
    assert doc["destination"] == {"ip": "66.66.66.66", "port": 443}
    assert doc["threat"]["indicator"]["ip"] == "66.66.66.66" and doc["threat"]["indicator"]["port"] == 443
    assert doc["threat"]["indicator"]["type"] == "ipv4-addr"
    assert doc["event"]["severity"] == 73 and doc["observer"]["name"] == "probe-1"
    assert doc["network"]["community_id"] == _community_id_reference(6, "10.0.0.1", "66.66.66.66", 40000, 443)
    assert doc["@timestamp"] == "2023-11-14T22:13:20.000005Z"


def test_maltrail_datagram_is_sec_space_line() -> None:
    ev = (1_700_000_000, 5, "10.0.0.1", 1000, "203.0.113.9", 80, "TCP", "URL", "evil.com/a?b=c|d", "malware (test)",
          "(static)")
    data = maltrail_datagram(ev[0], format_event(ev, "p").rstrip("\n").encode()).decode()
    sec, line = data.split(" ", 1)
    assert sec == "1700000000" and line.endswith("\n")
    assert line.split(" ", 2)[2] == \
        'p 10.0.0.1 1000 203.0.113.9 80 TCP URL evil.com/a?b=c|d "malware (test)" (static)\n'


def test_handoff_records_parse_back_into_the_events() -> None:
    """What the aggregator packs (seconds and log lines) is what the outputs process parses: quoted
    fields, empty ports, non-UTF-8 bytes, several records in one ring message."""
    events = [(1_700_000_000, 7, "10.0.0.1", 1000, "203.0.113.9", 80, "TCP", "URL", 'evil.com/"a b"',
               "malware (test)", "(static)"),
              (1_700_000_001, 999_999, "10.0.0.2", None, "10.0.0.3", None, "ICMP", "IP", "10.0.0.3", "x\udcff",
               "r"),
              (1_700_086_400, 0, "1.1.1.1, 2.2.2.2", 5, "::1", 6, "TCP", "HTTP", "a.b", "i", "")]
    lines = [format_event(ev, "probe 1") for ev in events]
    message = record([ev[0] for ev in events[:2]], lines[:2]) + record([events[2][0]], lines[2:])
    got = batches(message)
    assert [len(b) for b in got] == [2, 1]
    assert [ev for b in got for ev in b.events] == events
    assert [line for b in got for line in b.lines] == [x.rstrip("\n").encode("utf-8", "surrogateescape")
                                                       for x in lines]


@pytest.mark.parametrize(("table", "message"), [
    ({"type": "kafka"}, "type: expected one of"),
    ({"type": "syslog"}, "address: required"),
    ({"type": "syslog", "address": "nohost"}, "is not HOST:PORT"),
    ({"type": "syslog", "address": "127.0.0.1:514", "protocol": "http"}, "protocol: 'http' is not available"),
    ({"type": "maltrail", "address": "127.0.0.1:8337", "protocol": "tcp"}, "protocol: 'tcp' is not available"),
    ({"type": "syslog", "address": "127.0.0.1:514", "url": "http://x/"}, "url: does not apply"),
    ({"type": "webhook", "url": "ftp://x/"}, "url: expected an http"),
    ({"type": "webhook", "url": "http://x/", "min_severity": "urgent"}, "min_severity: expected one of"),
    ({"type": "json", "path": "/tmp/x", "address": "127.0.0.1:1"}, "not both"),
    ({"type": "json", "address": "127.0.0.1:1", "queue_size": 0}, "queue_size: 0 is out of range"),
    ({"type": "syslog", "address": "127.0.0.1:514", "tls_ca": "/x"}, r"tls_\* keys apply"),
    ({"type": "json", "address": "127.0.0.1:1", "colour": "red"}, "colour: unknown key"),
])
def test_bad_output_tables_are_refused_naming_the_key(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sensor_config_from({"output": [table]})


def test_disable_local_log_needs_an_output() -> None:
    with pytest.raises(ConfigError, match="disable_local_log"):
        sensor_config_from({"sensor": {"disable_local_log": True}})


def _capture(path: Path, malware: int, scanner: int, repeat_webhook: int = 0) -> Path:
    """`malware` SYNs to the malware trail (distinct source ports: distinct events), `scanner` SYNs
    from the low-severity scanner, `repeat_webhook` more malware SYNs from one other host."""
    eth = t.ethernet
    with PcapWriter(path) as w:
        ts = T0
        for i in range(malware):
            ts += 0.001
            w.write(eth(t.tcp4("10.0.0.66", "66.66.66.66", 20000 + i % 40000, 443, t.SYN)), ts)
        for i in range(scanner):
            ts += 0.001
            w.write(eth(t.tcp4("203.0.113.7", "10.0.0.9", 30000 + i, 22, t.SYN)), ts)
        for i in range(repeat_webhook):
            ts += 0.001
            w.write(eth(t.tcp4("10.0.0.77", "66.66.66.66", 50000 + i, 443, t.SYN)), ts)
    return path


def _sensor(tmp_path: Path, outputs: list[dict], capture: Path, **sensor: object):
    csv = tmp_path / "trails.csv"
    csv.write_text(TRAILS)
    index = tmp_path / "trails.mtidx"
    build_index_file([str(csv)], index)
    data = {"sensor": {"name": "probe-1", "trails": str(index), "log_dir": str(tmp_path / "logs"), **sensor},
            "output": outputs}
    return run_sensor(sensor_config_from(data), [capture])


def _log_lines(log_dir: Path) -> list[str]:
    return [line for f in sorted(log_dir.glob("*.log")) for line in f.read_text().splitlines()]


def _by_name(summary) -> dict[str, dict]:
    return {o["name"]: o for o in summary.status["outputs"]}


def test_every_output_receives_every_event(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    udp, tcp, tls = UdpReceiver(), StreamReceiver("octets"), StreamReceiver("octets", ca.server_context())
    jtcp, mal, hook = StreamReceiver("lines"), UdpReceiver(), WebhookReceiver()
    outputs = [
        {"type": "syslog", "name": "cef-udp", "address": udp.address, "protocol": "udp", "hostname": "probe-host"},
        {"type": "syslog", "name": "cef-tcp", "address": tcp.address, "protocol": "tcp"},
        {"type": "syslog", "name": "cef-tls", "address": tls.address, "protocol": "tls", "tls_ca": str(ca.ca_file)},
        {"type": "json", "name": "ecs-tcp", "address": jtcp.address, "protocol": "tcp"},
        {"type": "json", "name": "ecs-file", "path": str(tmp_path / "events.json")},
        {"type": "maltrail", "name": "server", "address": mal.address},
        {"type": "webhook", "name": "hook", "url": hook.url, "min_severity": "high", "throttle_seconds": 60},
    ]
    try:
        summary = _sensor(tmp_path, outputs, _capture(tmp_path / "c.pcap", 30, 5, repeat_webhook=3))
        lines = _log_lines(tmp_path / "logs")
        assert len(lines) == 38
        for receiver in (udp, tcp, tls, jtcp, mal):
            assert len(receiver.wait_for(38)) == 38
    finally:
        for r in (udp, tcp, tls, jtcp, mal, hook):
            r.stop()
    counters = _by_name(summary)
    for name in ("cef-udp", "cef-tcp", "cef-tls", "ecs-tcp", "ecs-file", "server"):
        assert (counters[name]["sent"], counters[name]["dropped"]) == (38, 0), counters[name]

    frames = [parse_syslog(f) for f in tls.got]
    assert sorted(int(f["cef"]["ext"]["spt"]) for f in frames if f["cef"]["ext"]["src"] == "10.0.0.66") == \
        list(range(20000, 20030))
    severities = {f["cef"]["ext"]["src"]: f["cef"]["severity"] for f in frames}
    assert severities == {"10.0.0.66": "8", "203.0.113.7": "3", "10.0.0.77": "8"}
    assert {f["pri"] for f in frames} == {8 + 2, 8 + 5}  # facility user, critical / notice
    assert parse_syslog(udp.got[0])["host"] == "probe-host"
    assert sorted(f["cef"]["ext"]["spt"] for f in frames) == \
        sorted(parse_syslog(f)["cef"]["ext"]["spt"] for f in tcp.got)

    for docs in ([json.loads(x) for x in jtcp.got],
                 [json.loads(x) for x in (tmp_path / "events.json").read_text().splitlines()]):
        assert len(docs) == 38
        for doc in docs:
            s, d = doc["source"], doc["destination"]
            assert doc["network"]["community_id"] == _community_id_reference(6, s["ip"], d["ip"], s["port"],
                                                                             d["port"])
            assert doc["observer"]["name"] == "probe-1"
        assert {d["threat"]["indicator"]["description"] for d in docs} == {"malware (test)", "mass scanner"}

    received = sorted(x.decode() for x in mal.got)
    assert sorted(x.split(" ", 1)[1].rstrip("\n") for x in received) == sorted(lines)
    assert all(x.split(" ", 1)[0].isdigit() for x in received)

    bodies = hook.bodies()
    # high only, one per (source, trail) within the window: 10.0.0.66 and 10.0.0.77 to the malware trail
    assert sorted(b["src_ip"] for b in bodies) == ["10.0.0.66", "10.0.0.77"]
    assert all(b["severity"] == "high" and b["trail"] == "66.66.66.66" for b in bodies)
    assert counters["hook"]["filtered"] == 5 and counters["hook"]["throttled"] == 31 and counters["hook"]["sent"] == 2
    text = "\n".join(summary.lines())
    assert "output       cef-tls (syslog to tls://" in text and "38 sent, 0 dropped" in text


def test_tls_output_refuses_an_unknown_ca(tmp_path: Path) -> None:
    ours, theirs = make_ca(tmp_path / "ours"), make_ca(tmp_path / "theirs")
    tls = StreamReceiver("octets", theirs.server_context())
    outputs = [{"type": "syslog", "name": "cef-tls", "address": tls.address, "protocol": "tls",
                "tls_ca": str(ours.ca_file), "retries": 1, "drain_seconds": 3}]
    try:
        summary = _sensor(tmp_path, outputs, _capture(tmp_path / "c.pcap", 3, 0))
    finally:
        tls.stop()
    o = _by_name(summary)["cef-tls"]
    assert tls.got == [] and o["sent"] == 0 and o["dropped"] == 3
    assert "CERTIFICATE_VERIFY_FAILED" in o["last_error"]


def test_webhook_retries_a_failing_receiver(tmp_path: Path) -> None:
    hook = WebhookReceiver(fail_first=2)
    outputs = [{"type": "webhook", "name": "hook", "url": hook.url, "retries": 3, "template": "$severity $trail",
                "throttle_seconds": 0}]
    try:
        summary = _sensor(tmp_path, outputs, _capture(tmp_path / "c.pcap", 2, 0))
    finally:
        hook.stop()
    o = _by_name(summary)["hook"]
    assert hook.bodies() == [{"text": "high 66.66.66.66"}] * 2
    assert (o["sent"], o["retries"], o["dropped"]) == (2, 2, 0)


def test_webhook_timeout_is_a_counted_failure(tmp_path: Path) -> None:
    hook = WebhookReceiver(delay=2.0)
    outputs = [{"type": "webhook", "name": "hook", "url": hook.url, "retries": 1, "timeout": 0.3,
                "throttle_seconds": 0, "drain_seconds": 5}]
    try:
        summary = _sensor(tmp_path, outputs, _capture(tmp_path / "c.pcap", 1, 0))
    finally:
        hook.stop()
    o = _by_name(summary)["hook"]
    assert (o["sent"], o["failed"], o["retries"], o["dropped"]) == (0, 1, 1, 1)
    assert "timed out" in o["last_error"]


def _victim(kind: str, ca_dir: Path) -> tuple[object, dict]:
    """A receiver of each kind and the output table that sends to it."""
    if kind == "webhook":
        hook = WebhookReceiver()
        return hook, {"type": "webhook", "url": hook.url, "min_severity": "low", "throttle_seconds": 0}
    if kind in ("maltrail", "syslog-udp"):
        udp = UdpReceiver()
        return udp, {"type": "maltrail" if kind == "maltrail" else "syslog", "address": udp.address}
    if kind == "syslog-tls":
        ca = make_ca(ca_dir)
        tls = StreamReceiver("octets", ca.server_context())
        return tls, {"type": "syslog", "address": tls.address, "protocol": "tls", "tls_ca": str(ca.ca_file)}
    framing = "octets" if kind == "syslog-tcp" else "lines"
    tcp = StreamReceiver(framing)
    return tcp, {"type": "syslog" if kind == "syslog-tcp" else "json", "address": tcp.address, "protocol": "tcp"}


@pytest.mark.parametrize("kind", ["json-tcp", "syslog-tcp", "syslog-tls", "syslog-udp", "maltrail", "webhook"])
def test_a_killed_receiver_loses_nothing_in_the_log_and_drops_are_counted(tmp_path: Path, capsys, kind: str
                                                                         ) -> None:
    """Each kind of receiver killed after its first events: events keep coming faster than the dead
    receiver's retries, its queue (10) fills, and every event is either sent or counted as dropped
    for that output only; the log and another output get everything."""
    victim, table = _victim(kind, tmp_path / "ca")
    survivor = StreamReceiver("lines")
    outputs = [{**table, "name": "victim", "queue_size": 10, "retries": 2, "drain_seconds": 3},
               {"type": "json", "name": "survivor", "address": survivor.address, "protocol": "tcp",
                "queue_size": 20_000}]
    killed: list[float] = []
    killer = threading.Thread(target=lambda: (victim.wait_for(KILL_AFTER), victim.stop(),
                                              killed.append(time.monotonic())))
    killer.start()
    try:
        summary = _sensor(tmp_path, outputs, _capture(tmp_path / "c.pcap", 20_000, 0), batch_packets=256)
        ended = time.monotonic()
        killer.join()
        assert killed[0] < ended, "the receiver must die while the sensor runs"
        assert len(survivor.wait_for(20_000)) == 20_000
    finally:
        survivor.stop()
        victim.stop()
    assert len(_log_lines(tmp_path / "logs")) == 20_000
    o = _by_name(summary)
    assert o["survivor"]["sent"] == 20_000 and o["survivor"]["dropped"] == 0
    v = o["victim"]
    received = len(victim.got)
    assert KILL_AFTER <= received <= v["sent"] and v["dropped_queue_full"] > 0
    assert v["sent"] + v["dropped"] == 20_000  # every event: sent, or counted as not sent
    assert main(["status", "--log-dir", str(tmp_path / "logs")]) == 1  # stopped
    status = capsys.readouterr().out
    assert f"output       victim ({table['type']} to {v['target']}): {v['sent']:,} sent, {v['dropped']:,} dropped" \
        in status
    if kind == "webhook":  # an HTTP answer acknowledges each event: sent is exactly what arrived
        assert v["sent"] == received
    elif kind in ("maltrail", "syslog-udp"):  # UDP: the kernel took it; a dead port refuses later sends
        assert v["sent"] - received <= 20_000 - KILL_AFTER
    else:  # TCP/TLS: sent, never read, is what the dead receiver's kernel acknowledged and held
        assert v["sent"] - received <= BATCH_MAX + 10


@pytest.mark.parametrize("protocol", ["tcp", "tls"])
def test_events_a_hung_receiver_never_acknowledged_are_dropped_not_sent(tmp_path: Path, protocol: str) -> None:
    """A receiver that stops reading, then dies: what sat unacknowledged in the sensor's send queue
    counts as dropped (`unacknowledged`), so `sent` exceeds what arrived by at most what its
    kernel acknowledged into its small receive buffer, not by the sensor's send buffer too."""
    ca = make_ca(tmp_path / "ca") if protocol == "tls" else None
    victim = StreamReceiver("lines", ca.server_context() if ca else None, stall_after=KILL_AFTER, rcvbuf=8192)
    table = {"type": "json", "name": "victim", "address": victim.address, "protocol": protocol, "queue_size": 10,
             "retries": 0, "timeout": 0.5, "drain_seconds": 3}
    if ca:
        table["tls_ca"] = str(ca.ca_file)
    killer = threading.Thread(target=lambda: (victim.wait_for(KILL_AFTER), time.sleep(1.0), victim.stop()))
    killer.start()
    try:
        summary = _sensor(tmp_path, [table], _capture(tmp_path / "c.pcap", 20_000, 0), batch_packets=256)
        killer.join()
    finally:
        victim.stop()
    assert len(_log_lines(tmp_path / "logs")) == 20_000
    v = _by_name(summary)["victim"]
    received = len(victim.got)
    assert v["sent"] + v["dropped"] == 20_000 and v["in_flight"] == 0
    assert v["unacknowledged"] > 0, v
    # acknowledged, never read: the receiver's buffer (the kernel doubles SO_RCVBUF), in lines of 400+ bytes
    assert received <= v["sent"] <= received + 2 * 8192 // 400, v


def test_disable_local_log_keeps_only_the_outputs(tmp_path: Path) -> None:
    out = tmp_path / "events.json"
    summary = _sensor(tmp_path, [{"type": "json", "path": str(out)}], _capture(tmp_path / "c.pcap", 4, 1),
                      disable_local_log=True)
    assert _log_lines(tmp_path / "logs") == []
    assert len(out.read_text().splitlines()) == 5
    assert summary.status["local_log"] is False
    assert "local log    disabled" in "\n".join(summary.lines())


def test_a_refused_udp_port_does_not_stall_the_sensor(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nobody listens there now
    summary = _sensor(tmp_path, [{"type": "maltrail", "address": f"127.0.0.1:{port}", "retries": 0}],
                      _capture(tmp_path / "c.pcap", 200, 0))
    o = summary.status["outputs"][0]
    assert len(_log_lines(tmp_path / "logs")) == 200
    assert o["sent"] + o["dropped"] == 200
