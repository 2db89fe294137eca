"""Payload protocols and heuristics on captures generated here, and the same events for any
number of workers (heuristic ones included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import traffic as t
from engine.config import SensorConfig
from engine.index.build import build_index_file
from engine.index.mapped import TrailIndex
from engine.ipaddr import ip4_text
from engine.pcapio import PcapWriter, read_batches
from engine.sensor import run_sensor
from workers.batch import parse_batch
from workers.httpbatch import without_values
from workers.payload import DetectionSettings, PayloadInspector, _private_addr, is_private

TRAILS = """\
evil-test-domain.com,malware (test),(static)
evil-parent.com,malware (test),(static)
tls-evil.example,malware (test),(static)
quic-evil.example,malware (test),(static)
/malicious-login.php,malware (test),(static)
evil-url.example/bad/path,malware (test),(static)
203.0.113.44,malware (test),(static)
198.51.100.53,known attacker,(static)
198.51.100.90,sinkhole testsink (malware),(static)
198.51.100.91,parking site (suspicious),(static)
dga[0-9]+\\.wildcard-test\\.com,malware (test),(static)
ua:evilbot/6.6 (test build),malware agent (test),(static)
"""
T0 = 1_700_000_000.0
A, E, V, R = "10.0.0.66", "203.0.113.9", "198.51.100.7", "192.0.2.53"


def _dns_q(ts: float, name: str, sport: int = 50000, qtype: int = 1, resolver: str = R) -> tuple[float, bytes]:
    return ts, t.ethernet(t.udp4(A, resolver, sport, 53, t.dns_query(name, qtype)))


def _dns_r(ts: float, name: str, answers: list[str], rcode: int = 0, client: str = A,
           sport: int = 50000) -> tuple[float, bytes]:
    payload = bytearray(t.dns_response(name, answers, rcode=rcode))
    payload[3] = 0x80 | rcode  # RA set, plain answer: Maltrail's exact flag byte
    return ts, t.ethernet(t.udp4(R, client, 53, sport, bytes(payload)))


def _http(ts: float, method: str, path: str, host: str | None, ua: str | None = None, dst: str = V,
          sport: int = 50100, body: bytes = b"") -> tuple[float, bytes]:
    req = t.http_request(method, path, host=host, user_agent=ua, body=body)
    return ts, t.ethernet(t.tcp4(A, dst, sport, 80, t.PSH | t.ACK, req))


def everything(path: Path) -> Path:
    frames: list[tuple[float, bytes]] = [
        _dns_q(T0, "evil-test-domain.com"),
        _dns_q(T0 + 0.1, "www.evil-parent.com"),
        _dns_q(T0 + 0.2, "dga1234.wildcard-test.com"),
        _dns_q(T0 + 0.3, "whatever.com", resolver="198.51.100.53"),
        _dns_q(T0 + 0.4, "whatever.com", qtype=28, resolver="198.51.100.53"),  # AAAA, same socket and second
        _dns_q(T0 + 0.5, "host.local"),  # ignored suffix
        _dns_r(T0 + 0.6, "sinkholed.com", ["198.51.100.90"]),
        _dns_r(T0 + 0.7, "parked.com", ["198.51.100.91"], sport=50011),
        _http(T0 + 1, "GET", "/malicious-login.php", "victim.example"),
        _http(T0 + 1.1, "GET", "/bad/path", "evil-url.example", sport=50101),
        _http(T0 + 1.2, "GET", "/index.html", "hostcheck.example", dst="203.0.113.44", sport=50102),
        _http(T0 + 1.3, "GET", "/items.php?id=1%20union%20all%20select%20username,password%20from%20users",
              "sqli.example", sport=50103),
        _http(T0 + 1.4, "GET", "/download?file=../../../../etc/passwd", "trav.example", sport=50104),
        _http(T0 + 1.5, "GET", "/", "ua.example", ua="masscan/1.0", sport=50105),
        _http(T0 + 1.6, "GET", "/setup.exe", "dl.example", sport=50106),
        (T0 + 2, t.ethernet(t.tcp4(A, "203.0.113.30", 50400, 443, t.PSH | t.ACK,
                                   t.tls_client_hello("tls-evil.example")))),
        (T0 + 2.1, t.ethernet(t.udp4(A, "203.0.113.31", 50500, 443, t.quic_initial("quic-evil.example")))),
    ]
    # ordinary connections from local clients: they make 10.0. the local prefix infection needs
    for i in range(3):
        syn = t.tcp4(f"10.0.0.{70 + i}", "192.0.2.80", 55000 + i, 443, t.SYN)
        frames.append((T0 + 0.8 + i * 0.01, t.ethernet(syn)))
    # port scan: E -> V, 20 ports over 20 s; UDP scan likewise; infection: A SYN :445 to 40 hosts
    for i in range(20):
        frames.append((T0 + 3 + i, t.ethernet(t.tcp4(E, V, 40000 + i, 1000 + i, t.SYN))))
        frames.append((T0 + 3 + i + 0.5, t.ethernet(t.udp4(E, V, 41000 + i, 2000 + i, b"probe"))))
    for i in range(40):
        frames.append((T0 + 25 + i * 0.01, t.ethernet(t.tcp4("10.0.0.5", f"10.9.9.{i}", 53000 + i, 445, t.SYN))))
    # web scan: 14 distinct first segments E -> V:80
    for i in range(14):
        req = t.http_request("GET", f"/scan{i}/x", host="victim.example")
        frames.append((T0 + 27, t.ethernet(t.tcp4(E, V, 52000 + i, 80, t.PSH | t.ACK, req))))
    # NXDOMAIN flood to a public client, and a DGA-like 2-label name
    for i in range(25):
        frames.append(_dns_r(T0 + 30 + i, f"nx{i}.dgaparent.com", [], rcode=3, client="203.0.113.5", sport=40020))
    frames.append(_dns_r(T0 + 56, "xkqwzrtplmnbvcdf.com", [], rcode=3, sport=40021))
    frames.append((T0 + 60, t.ethernet(t.tcp4(A, "192.0.2.1", 1, 2, t.ACK))))  # a later packet: last sweep
    frames.sort(key=lambda f: f[0])
    with PcapWriter(path) as w:
        for ts, frame in frames:
            w.write(frame, ts)
    return path


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("det")
    (d / "trails.csv").write_text(TRAILS)
    build_index_file([str(d / "trails.csv")], d / "t.mtidx")
    return d / "t.mtidx"


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return everything(tmp_path_factory.mktemp("cap") / "everything.pcap")


def _run(index: Path, capture: Path, log_dir: Path, workers: int = 1, batch: int = 4096) -> list[str]:
    cfg = SensorConfig(name="t", trails=str(index), log_dir=str(log_dir), workers=workers, batch_packets=batch,
                       check_missing_host=True, check_host_domains=True)
    run_sensor(cfg, [capture])
    return [line for f in sorted(log_dir.glob("*.log")) for line in f.read_text().splitlines()]


EXPECTED = [
    ("DNS evil-test-domain.com", "malware (test)"),
    ("DNS (www).evil-parent.com", "malware (test)"),
    ("DNS dga1234.wildcard-test.com", "malware (test)"),
    ("IP \"198.51.100.53 (whatever.com)\"", "known attacker"),
    ("DNS (sinkholed).com", "sinkholed by testsink (malware)"),
    ("DNS (parked).com", "parked site (suspicious)"),
    ("URL (victim.example)/malicious-login.php", "malware (test)"),
    ("URL evil-url.example/bad/path", "malware (test)"),
    ("IP \"203.0.113.44 (hostcheck.example)\"", "malware (test)"),
    ("URL sqli.example(", "potential sql injection (suspicious)"),
    ("URL trav.example(", "potential directory traversal (suspicious)"),
    ("UA masscan(/1.0)", "user agent (suspicious)"),
    ("URL dl.example(/setup.exe)", "direct .exe download (suspicious)"),
    ("TCP DNS tls-evil.example", "malware (test)"),
    ("UDP DNS quic-evil.example", "malware (test)"),
    ("TCP IP 203.0.113.9", "potential port scanning"),
    ("UDP IP 203.0.113.9", "potential udp scanning"),
    ("TCP PORT 445", "potential infection"),
    ("TCP PATH *", "potential web scanning"),
    (".dgaparent.com", "excessive no such domain (suspicious)"),
    ("DNS (xkqwzrtplmnbvcdf).com", "threshold no such domain (suspicious)"),
]


def test_every_protocol_and_heuristic(index: Path, capture: Path, tmp_path: Path) -> None:
    lines = _run(index, capture, tmp_path / "logs")
    text = "\n".join(lines)
    for trail_part, info in EXPECTED:
        assert any(trail_part in line and info in line for line in lines), f"{trail_part} / {info}:\n{text}"
    assert sum("198.51.100.53 (whatever.com)" in line for line in lines) == 1  # A + AAAA: one event
    assert "host.local" not in text
    assert sum("potential port scanning" in line for line in lines) == 1


def test_same_events_for_1_2_4_and_8_workers(index: Path, capture: Path, tmp_path: Path) -> None:
    results = [_run(index, capture, tmp_path / f"w{w}", workers=w, batch=8) for w in (1, 2, 4, 8)]
    assert results[0]
    assert all(r == results[0] for r in results[1:])


def test_junk_to_port_53_still_hits_ip_trails(index: Path, tmp_path: Path) -> None:
    frames = [(T0, t.ethernet(t.udp4(A, "203.0.113.44", 40000, 53, b"\x01\x02not dns"))),
              (T0 + 1, t.ethernet(t.udp4(A, "203.0.113.44", 40001, 53, t.dns_query("clean.example.org"))))]
    path = tmp_path / "junk.pcap"
    with PcapWriter(path) as w:
        for ts, frame in frames:
            w.write(frame, ts)
    lines = _run(index, path, tmp_path / "logs")
    assert len(lines) == 2, lines
    assert " 40000 203.0.113.44 53 UDP IP 203.0.113.44 " in lines[0]  # junk: plain IP rule
    assert '"203.0.113.44 (clean.example.org)"' in lines[1]  # real query: resolver rule


def test_thresholds_come_from_the_configuration(index: Path, capture: Path, tmp_path: Path) -> None:
    cfg = SensorConfig(name="t", trails=str(index), log_dir=str(tmp_path / "logs"), port_scan_threshold=25,
                       disabled_heuristics=["udp_scanning"])
    run_sensor(cfg, [capture])
    text = "".join(f.read_text() for f in (tmp_path / "logs").glob("*.log"))
    assert "potential port scanning" not in text  # 20 ports is not more than 25
    assert "potential udp scanning" not in text  # muted
    assert "potential infection" in text


def test_server_certificate_sha1_trail(tmp_path: Path) -> None:
    import hashlib

    cert = bytes.fromhex("3082") + bytes(range(256)) * 3  # DER-looking blob: only its SHA-1 matters
    sha1 = hashlib.sha1(cert).hexdigest()
    (tmp_path / "trails.csv").write_text(f"{sha1},c2 cert (malware),(static)\n")
    build_index_file([str(tmp_path / "trails.csv")], tmp_path / "t.mtidx")
    flight = t.tls_server_certificate_flight(cert)
    path = tmp_path / "cert.pcap"
    with PcapWriter(path) as w:
        w.write(t.ethernet(t.tcp4("203.0.113.70", A, 443, 50600, t.PSH | t.ACK, flight)), T0)
    lines = _run(tmp_path / "t.mtidx", path, tmp_path / "logs")
    assert len(lines) == 1 and f" TCP CERT {sha1} " in lines[0] and "c2 cert (malware)" in lines[0]
    assert TrailIndex(tmp_path / "t.mtidx").meta["counts"]["certificates"] == 1
    # Without certificate trails, server handshakes are not even selected for inspection.
    (tmp_path / "none.csv").write_text("evil.example,malware (test),(static)\n")
    build_index_file([str(tmp_path / "none.csv")], tmp_path / "none.mtidx")
    batch = next(read_batches(path))
    data = np.frombuffer(batch.data, np.uint8)
    parsed = parse_batch(batch.meta, data, batch.linktype)
    with_certs = PayloadInspector(TrailIndex(tmp_path / "t.mtidx"), DetectionSettings())
    without = PayloadInspector(TrailIndex(tmp_path / "none.mtidx"), DetectionSettings())
    assert with_certs.rows(parsed).size == 1 and without.rows(parsed).size == 0


def test_ipv6_payloads_and_heuristics(index: Path, tmp_path: Path) -> None:
    """The bulk DNS path, lazy address texts and grouped probes spell IPv6 addresses out right."""
    c6, r6, s6, e6 = "2001:db8:a::66:0", "2001:db8::53", "2001:db8:b::7", "2001:db8:e::900"  # trailing zero bytes
    frames = [
        (T0, t.ethernet(t.udp6(c6, r6, 50000, 53, t.dns_query("www.evil-parent.com")))),
        (T0 + 0.1, t.ethernet(t.tcp6(c6, s6, 50100, 80, t.PSH | t.ACK,
                                     t.http_request("GET", "/malicious-login.php", host="v6.example")))),
        (T0 + 0.2, t.ethernet(t.tcp6(c6, s6, 50101, 443, t.PSH | t.ACK, t.tls_client_hello("tls-evil.example")))),
    ]
    for i in range(25):
        nx = bytearray(t.dns_response(f"n{i}.b.example", [], rcode=3))
        nx[3] = 0x83  # RA set, NXDOMAIN: Maltrail's exact flag byte
        frames.append((T0 + 1 + i, t.ethernet(t.udp6(r6, "2001:db8:c::500", 53, 40000, bytes(nx)))))
    for i in range(20):
        frames.append((T0 + 1 + i, t.ethernet(t.tcp6(e6, s6, 40000 + i, 1000 + i, t.SYN))))
    frames.append((T0 + 40, t.ethernet(t.tcp6(c6, s6, 1, 2, t.ACK))))
    frames.sort(key=lambda f: f[0])
    path = tmp_path / "v6.pcap"
    with PcapWriter(path) as w:
        for ts, frame in frames:
            w.write(frame, ts)
    lines = _run(index, path, tmp_path / "logs")
    text = "\n".join(lines)
    assert any(f" {c6} 50000 {r6} 53 UDP DNS (www).evil-parent.com " in line for line in lines), text
    assert any(f" {c6} 50100 {s6} 80 TCP URL (v6.example)/malicious-login.php " in line for line in lines), text
    assert any(f" {c6} 50101 {s6} 443 TCP DNS tls-evil.example " in line for line in lines), text
    assert any(f" {e6} 40000 {s6} 1000 TCP IP {e6} " in line and "port scanning" in line for line in lines), text
    assert any(f" {r6} 53 2001:db8:c::500 40000 UDP DNS " in line and "no such domain" in line for line in lines), text


def test_repeated_requests_report_as_if_each_were_new(index: Path, tmp_path: Path) -> None:
    """A request seen again (other client, port and time) is replayed from its recorded plan; the
    items must equal those of an inspector that has never seen it, forwarded-for source included."""
    fwd = {"X-Forwarded-For": "192.0.2.200"}
    requests = [
        ("GET", "/malicious-login.php", "victim.example", None, V, {}, b""),
        ("GET", "/bad/path", "evil-url.example", None, V, {}, b""),
        ("GET", "/index.html", "hostcheck.example", None, "203.0.113.44", {}, b""),
        ("GET", "/items.php?id=1%20union%20all%20select%20username,password%20from%20users", "sqli.example", None, V,
         fwd, b""),
        ("POST", "/form", "post.example", None, V, fwd, b"q=<script>alert(1)</script>"),
        ("GET", "/", "ua.example", "masscan/1.0", V, {}, b""),
        ("GET", "/setup.exe.txt", "ua-trail.example", "EvilBot/6.6 (test build)", V, {}, b""),
        ("GET", "/setup.exe", "dl.example", None, V, fwd, b""),
        ("GET", "http://proxy-check.example/probe.txt", "proxy-check.example", None, V, {}, b""),
        ("GET", "/plain.html", None, None, V, {}, b""),
        ("GET", "/" + "a" * 2000, "long.example", None, V, {}, b""),  # too long to keep: checked every time
    ]
    frames = []
    for i, (method, path, host, ua, dst, headers, body) in enumerate(requests):
        req = t.http_request(method, path, host=host, user_agent=ua, headers=headers, body=body)
        other = dst if dst == "203.0.113.44" else "198.51.100.8"  # another unlisted public server
        for k, (client, server) in enumerate(((A, dst), ("10.0.0.77", dst), ("10.0.0.78", other),
                                              ("10.0.0.79", "10.1.1.1"), ("10.0.0.80", dst))):
            frames.append(t.ethernet(t.tcp4(client, server, 50000 + 10 * i + k, 80, t.PSH | t.ACK, req)))
    path = tmp_path / "repeat.pcap"
    with PcapWriter(path) as w:
        for n, frame in enumerate(frames):
            w.write(frame, T0 + n * 0.01)
    batch = next(read_batches(path))
    data = np.frombuffer(batch.data, np.uint8)
    parsed = parse_batch(batch.meta, data, batch.linktype)
    settings = DetectionSettings(check_missing_host=True)
    shared = PayloadInspector(TrailIndex(index), settings)
    rows = shared.rows(parsed)
    assert rows.size == len(frames)
    items = shared.inspect(parsed, data, rows)
    fresh = [item for row in rows.tolist()
             for item in PayloadInspector(TrailIndex(index), settings).inspect(parsed, data, np.array([row]))]
    assert items == fresh
    reported = [payload[0] for _, kind, payload in items if kind == "event"]
    assert sum(ev[7:10] == ("UA", "ua:EvilBot/6.6 (test build)", "malware agent (test)") for ev in reported) == 5
    assert any(ev[2] == "10.0.0.80,192.0.2.200" for ev in reported)  # a replayed forwarded-for source
    assert sum(kind == "web" for _, kind, _ in items) >= 5 * 7
    assert any(ev[8] == "dl.example(/setup.exe)" and ev[4] == "198.51.100.8" for ev in reported)
    assert not any(ev[8] == "dl.example(/setup.exe)" and ev[4] == "10.1.1.1" for ev in reported)  # private server
    plans = [p for p in shared._requests.values() if hasattr(p, "actions")]
    assert len(plans) < len(frames) - 5  # repeats were replayed, the long request never kept


@given(st.integers(0, 2**32 - 1) | st.sampled_from([
    0x0A000000, 0x09FFFFFF, 0x0B000000, 0x7F000001, 0xAC0FFFFF, 0xAC100000, 0xAC1FFFFF, 0xAC200000, 0xC0A80000,
    0xC0A7FFFF, 0xC0A90000, 0xA9FE0001, 0xA9FD0001]))
def test_private_address_test_without_text(ip: int) -> None:
    assert _private_addr(ip) == is_private(ip4_text(ip))


@given(st.text(alphabet="ab?&=/.x%", max_size=40))
def test_parameter_values_are_cut_as_maltrails_regex_does(path: str) -> None:
    import re

    assert without_values(path) == re.sub(r"(?<=[?&])([^=&]*)=[^&]*", r"\1=", path)


def test_names_cached_at_a_batch_start_survive_its_evictions(index: Path) -> None:
    """A name the caches hold when a batch starts is answered from them even when the batch's new
    names evict it on the way (tiny caches force that); the items equal a fresh inspector's."""
    ix = TrailIndex(index)
    frames = [_dns_q(0, "www.news-old.com")[1], _dns_r(0, "gone-old.com", [], rcode=3)[1]]
    later = [_dns_q(1, n)[1] for n in ("www.news-old.com", "a.news-one.com", "b.news-two.com", "evil.com")]
    later += [_dns_r(1, n, [], rcode=3)[1] for n in ("gone-old.com", "x.gone-one.com", "y.gone-two.com")]

    def items(inspector: PayloadInspector, batch: list[bytes]) -> list:
        meta, data = t.frames_batch(batch)
        p = parse_batch(meta, data, 1)
        return inspector.inspect(p, data, inspector.rows(p))

    warm = PayloadInspector(ix, DetectionSettings(use_heuristics=True))
    items(warm, frames)
    warm._names.size = warm._nx_names.size = 1
    assert items(warm, later) == items(PayloadInspector(ix, DetectionSettings(use_heuristics=True)), later)
