"""Differential test against tshark (issue 11): every DNS query name, HTTP Host and TLS / QUIC SNI
that Wireshark's dissectors find in a capture the project owns must be reported by the sensor.

For each capture (the vendored corpus, small captures of every traffic mix of `engine.traffic`, one
hand-built capture per supported link type) tshark extracts the names; a `trails.csv` lists every
one of them (info `differential (test)`), and the capture is replayed through the real sensor with
Host-domain checks on and heuristics off (so the only events naming a domain are trail hits). Each
extracted name must then appear in the trail of some event, unless one of the explicit rules in
`_excluded` says why the sensor deliberately does not look at it; every rule cites the document
that says so. The share of tshark's names reported is printed per capture and overall (pytest -s, or
the terminal summary).

Skipped when tshark is not installed; `scripts/setup.sh` installs it, so CI runs it.
"""

from __future__ import annotations

import csv
import ipaddress
import re
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.config import SensorConfig
from engine.index.build import build_index_file
from engine.pcapio import PcapWriter
from engine.sensor import run_sensor
from engine.traffic import (
    ACK,
    LINKTYPES,
    MIXES,
    PSH,
    SYN,
    dns_query,
    ethernet,
    http_request,
    icmp4,
    mixed_capture,
    quic_initial,
    tcp4,
    tcp6,
    tls_client_hello,
    udp4,
    udp6,
)
from engine.trails.whitelist import Whitelist
from workers.protocols.quic import QUIC_V2

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (scripts/setup.sh installs it)")

CORPUS = Path(__file__).resolve().parent / "data" / "corpus"
INFO, REFERENCE = "differential (test)", "(differential)"
MIX_PACKETS = 3000

# --- exclusion rules: what the sensor deliberately does not inspect, each with its source ---------

# detection-spec.md 1.4 / 2.7: Maltrail's VALID_DNS_NAME_REGEX (`[A-Za-z0-9._-]*` then `.` then a last
# label of `[A-Za-z0-9-]+`); a name failing it is never looked up (a bare label such as `evilname`,
# a name with a space or a non-ASCII byte, a trailing dot)
VALID_DNS_NAME = re.compile(r"[a-z0-9._-]*\.[a-z0-9-]+")
# detection-spec.md 2.7: IGNORE_DNS_QUERY_SUFFIXES (last label), and any name containing `.intranet.`
IGNORED_SUFFIXES = frozenset(("arpa", "local", "guest", "intranet", "corp", "home", "lan", "intra", "intran",
                              "workgroup", "localdomain", "url", "alienvault", "example", "internal", "localnet",
                              "test"))
PTR, CLASS_IN = 12, 1
WHITELIST = Whitelist.default()  # engine/data/whitelist.txt, Maltrail's bundled whitelist


@dataclass(frozen=True)
class Name:
    """One name tshark found: where (frame, protocol) and the facts the exclusion rules look at."""

    frame: int
    kind: str  # "dns", "http" or "sni"
    name: str
    ports: tuple[int, ...] = ()  # the frame's transport ports (src, dst)
    transport: str = ""  # "udp" or "tcp"
    reassembled: bool = False  # tshark put the message together from more than one TCP segment
    qtype: int = 1
    qclass: int = CLASS_IN
    question: int = 0  # index of the question within its DNS message
    opcode: int = 0
    truncated: bool = False
    in_icmp: bool = False  # a copy quoted inside an ICMP error, not traffic


def _excluded(n: Name) -> str | None:
    """Why the sensor does not report `n` (None: it must). Every rule is documented behaviour."""
    name = n.name.lower()
    if n.in_icmp:
        # detection-spec.md 2.9: ICMP is checked by address only (echo requests); a datagram quoted
        # in an ICMP error is not parsed
        return "quoted in an ICMP error"
    if n.kind == "dns":
        if 53 not in n.ports:
            # detection-spec.md 2.7 / DIFFERENCES.md: DNS is parsed on (src or dst) port 53 only;
            # tshark also decodes DNS on other ports (e.g. 5353 without mDNS dissection)
            return "DNS off port 53"
        if n.question > 0:
            # detection-spec.md 2.7: the name is read from offset 12, i.e. only the first question
            return "not the first question of its message"
        if n.opcode != 0 or n.truncated:
            # detection-spec.md 2.7: a query is `flags byte2 & 0xFA == 0` (opcode 0, TC 0)
            return "opcode not QUERY or TC set"
        if n.qtype == PTR or n.qclass != CLASS_IN:
            # detection-spec.md 2.7 + DIFFERENCES.md (AAAA): PTR and non-IN queries get no trail checks
            return "PTR or non-IN query"
        if n.transport == "tcp" and n.reassembled:
            # DIFFERENCES.md (DNS over TCP): no stream reassembly; a message split across segments
            # (or a length sent in a segment of its own) is skipped
            return "DNS over TCP message split across segments"
        if ".intranet." in name or name.rpartition(".")[2] in IGNORED_SUFFIXES:
            return "ignored DNS suffix (IGNORE_DNS_QUERY_SUFFIXES)"
    if n.kind == "http":
        if n.reassembled:
            # DIFFERENCES.md (HTTP details): requests are read per TCP segment; tshark reassembles
            # a request whose headers span segments, the sensor does not
            return "HTTP request reassembled by tshark across segments"
        if _is_ip_literal(name):
            # detection-spec.md 1.4: a name of digits and dots (an IP literal) is not a domain
            return "Host is an IP literal"
    if n.kind == "sni" and n.transport == "tcp" and n.reassembled:
        # detection-spec.md 2.8: the SNI is read from a TCP payload that begins with the handshake
        # record; a ClientHello spread over segments is not reassembled
        return "ClientHello reassembled by tshark across segments"
    if not VALID_DNS_NAME.fullmatch(name):
        return "not a valid DNS name (VALID_DNS_NAME_REGEX)"
    if WHITELIST.is_domain_whitelisted(name):
        # detection-spec.md 4.6: whitelisted names (and their subdomains) are never reported; the
        # bundled whitelist also drops them from the trails
        return "whitelisted (engine/data/whitelist.txt)"
    return None


def _is_ip_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return bool(text) and all(c.isdigit() or c == "." for c in text)
    return True


# --- tshark --------------------------------------------------------------------------------------

FIELDS = ("frame.number", "frame.protocols", "udp.srcport", "udp.dstport", "tcp.srcport", "tcp.dstport",
          "tcp.reassembled.length", "dns.flags.response", "dns.flags.opcode", "dns.flags.truncated",
          "dns.count.queries", "dns.qry.name", "dns.qry.type", "dns.qry.class", "http.host",
          "tls.handshake.extensions_server_name")
SEP = "\x1f"  # between repeated values of a field (names never contain it)


def tshark_names(capture: Path) -> list[Name]:
    """Every DNS query name (dns.flags.response == 0), HTTP Host and TLS / QUIC SNI of a capture."""
    cmd = [str(TSHARK), "-n", "-r", str(capture), "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a",
           "-E", f"aggregator={SEP}", "-Y", "dns || http.host || tls.handshake.extensions_server_name"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, errors="replace").stdout
    names: list[Name] = []
    for line in out.splitlines():
        cols = dict(zip(FIELDS, line.split("\t"), strict=True))

        def vals(field: str, cols: dict[str, str] = cols) -> list[str]:
            return cols[field].split(SEP) if cols[field] else []

        frame = int(cols["frame.number"])
        protocols = cols["frame.protocols"].split(":")
        transport = "tcp" if "tcp" in protocols else "udp" if "udp" in protocols else ""
        ports = tuple(int(p) for p in (vals(f"{transport}.srcport") + vals(f"{transport}.dstport"))[:2] if p)
        common = {"frame": frame, "ports": ports, "transport": transport,
                  "reassembled": bool(cols["tcp.reassembled.length"]),
                  "in_icmp": "icmp" in protocols or "icmpv6" in protocols}
        qnames, qtypes, qclasses = vals("dns.qry.name"), vals("dns.qry.type"), vals("dns.qry.class")
        counts, at = vals("dns.count.queries"), 0
        for m, response in enumerate(vals("dns.flags.response")):
            count = int(counts[m]) if m < len(counts) else 1
            for q in range(count):
                i = at + q
                if response in ("0", "False") and i < len(qnames) and qnames[i] not in ("", "<Root>"):
                    names.append(Name(kind="dns", name=qnames[i], question=q,
                                      qtype=int(qtypes[i], 0) if i < len(qtypes) else 1,
                                      qclass=int(qclasses[i], 0) if i < len(qclasses) else CLASS_IN,
                                      opcode=int(vals("dns.flags.opcode")[m]),
                                      truncated=vals("dns.flags.truncated")[m] in ("1", "True"), **common))
            at += count
        for host in vals("http.host"):
            host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host  # Host: name:port (spec 1.4: cut at ':')
            names.append(Name(kind="http", name=host, **common))
        for sni in vals("tls.handshake.extensions_server_name"):
            names.append(Name(kind="sni", name=sni, **common))
    return names


# --- the sensor ----------------------------------------------------------------------------------


def sensor_trails(capture: Path, names: set[str], tmp: Path) -> set[str]:
    """Replay `capture` with a trail for each of `names`; the words of every event's trail, with
    the brackets Maltrail puts around the unmatched parts removed (`(www).evil.com` → `www.evil.com`)."""
    csv_path, index = tmp / "trails.csv", tmp / "trails.mtidx"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        for name in sorted(names):
            writer.writerow((name, INFO, REFERENCE))
    build_index_file([str(csv_path)], index)
    cfg = SensorConfig(name="diff", trails=str(index), log_dir=str(tmp / "logs"), workers=1,
                       use_heuristics=False, check_host_domains=True)
    run_sensor(cfg, [capture])
    words: set[str] = set()
    for log in sorted((tmp / "logs").glob("*.log")):
        for row in csv.reader(log.read_text().splitlines(), delimiter=" ", quotechar='"', doublequote=True):
            words.update(row[8].replace("(", "").replace(")", "").lower().split())
    return words


SHARES: dict[str, tuple[int, int, int]] = {}  # capture: (reported, not excluded, all names tshark found)


@pytest.fixture(scope="module", autouse=True)
def _report_shares(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not SHARES:
        return
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    def pct(part: int, whole: int) -> str:
        return f"{100 * part / whole:6.1f} %" if whole else "     - "

    lines = ["tshark differential (distinct names): reported / tshark's names not excluded by a rule, "
             "and reported / all of tshark's names"]
    rows = sorted(SHARES.items()) + [("overall", tuple(sum(v[i] for v in SHARES.values()) for i in range(3)))]
    for capture, (hit, wanted, found) in rows:
        lines.append(f"  {capture:32} {hit:5d} / {wanted:5d} {pct(hit, wanted)}"
                     f"   {hit:5d} / {found:5d} {pct(hit, found)}")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():  # shown without -s too
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


def check_capture(label: str, capture: Path, tmp: Path) -> None:
    names = tshark_names(capture)
    wanted = [n for n in names if _excluded(n) is None]
    reported = sensor_trails(capture, {n.name.lower() for n in wanted}, tmp) if wanted else set()
    missed = sorted({n.name.lower() for n in wanted if n.name.lower() not in reported})
    distinct = {n.name.lower() for n in wanted}
    SHARES[label] = (len(distinct) - len(missed), len(distinct), len({n.name.lower() for n in names}))
    excluded: dict[str, set[str]] = {}
    for n in names:
        why = _excluded(n)
        if why is not None:
            excluded.setdefault(why, set()).add(n.name)
    print(f"{label}: {len(distinct) - len(missed)}/{len(distinct)} names reported; excluded: "
          + ("; ".join(f"{why}: {sorted(v)[:5]}" for why, v in sorted(excluded.items())) or "none"))
    assert not missed, f"{label}: tshark found names the sensor did not report: {missed[:20]}"


# --- the captures ----------------------------------------------------------------------------------

CORPUS_CAPTURES = sorted(p.name for p in CORPUS.glob("*.pcap"))


@pytest.mark.parametrize("pcap", CORPUS_CAPTURES)
def test_corpus_capture(pcap: str, tmp_path: Path) -> None:
    check_capture(f"corpus/{pcap}", CORPUS / pcap, tmp_path)


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_traffic_mix(mix: str, tmp_path: Path) -> None:
    capture = tmp_path / f"{mix}.pcap"
    mixed_capture(capture, MIX_PACKETS, seed=11, mix=mix)
    check_capture(f"mix/{mix}", capture, tmp_path)


def _link_packets(tag: str) -> Iterator[bytes]:
    """IP packets covering each extraction path, names tagged per link type; some are meant to be
    excluded (split DNS over TCP and HTTP, a PTR query, an ignored suffix, a whitelisted name)."""
    c4, s4, c6, s6 = "10.0.0.1", "93.184.216.34", "fd00:10::1", "2606:2800:220:1::1"
    yield udp4(c4, "10.0.0.53", 40001, 53, dns_query(f"q4.{tag}.difftest.net"))
    yield udp6(c6, "fd00:10::53", 40002, 53, dns_query(f"q6.{tag}.difftest.net", qtype=28))
    yield udp4(c4, "10.0.0.53", 40003, 53, dns_query("4.3.2.1.in-addr.arpa", qtype=PTR))
    yield udp4(c4, "10.0.0.53", 40004, 53, dns_query(f"printer.{tag}.lan"))
    yield udp4(c4, "10.0.0.53", 40005, 53, dns_query("www.akamai.net"))
    whole = dns_query(f"tcp.{tag}.difftest.net")
    yield tcp4(c4, "10.0.0.53", 40006, 53, ACK | PSH, len(whole).to_bytes(2, "big") + whole, seq=1000, ack=1)
    split = dns_query(f"split.{tag}.difftest.net")
    split = len(split).to_bytes(2, "big") + split
    yield tcp4(c4, "10.0.0.53", 40007, 53, ACK, split[:10], seq=5000, ack=1)
    yield tcp4(c4, "10.0.0.53", 40007, 53, ACK | PSH, split[10:], seq=5010, ack=1)
    yield tcp4(c4, s4, 40008, 80, SYN, seq=100)
    yield tcp4(c4, s4, 40008, 80, ACK | PSH, http_request("GET", "/", host=f"web4.{tag}.difftest.net"), seq=101, ack=1)
    yield tcp6(c6, s6, 40009, 8080, ACK | PSH, http_request("GET", "/a", host=f"web6.{tag}.difftest.net:8080"),
               seq=101, ack=1)
    req = http_request("GET", "/b", host=f"splithttp.{tag}.difftest.net", user_agent="curl/8.4.0")
    yield tcp4(c4, s4, 40010, 80, ACK, req[:12], seq=7000, ack=1)
    yield tcp4(c4, s4, 40010, 80, ACK | PSH, req[12:], seq=7012, ack=1)
    yield tcp4(c4, s4, 40011, 443, ACK | PSH, tls_client_hello(f"tls4.{tag}.difftest.net"), seq=1, ack=1)
    yield tcp6(c6, s6, 40012, 443, ACK | PSH, tls_client_hello(f"tls6.{tag}.difftest.net"), seq=1, ack=1)
    yield udp4(c4, s4, 40013, 443, quic_initial(f"quic1.{tag}.difftest.net", dcid=bytes.fromhex("0102030405060708")))
    yield udp6(c6, s6, 40014, 443, quic_initial(f"quic2.{tag}.difftest.net", dcid=bytes.fromhex("1112131415161718"),
                                                version=QUIC_V2))


@pytest.mark.parametrize("link", sorted(LINKTYPES))
def test_link_type(link: str, tmp_path: Path) -> None:
    dlt, frame = LINKTYPES[link]
    wrap: Callable[[bytes], bytes] = ethernet if link == "ethernet" else frame
    capture = tmp_path / f"{link}.pcap"
    with PcapWriter(capture, linktype=dlt) as writer:
        for i, packet in enumerate(_link_packets(link)):
            writer.write(wrap(packet), 1_700_000_000 + i / 1000)
    check_capture(f"link/{link}", capture, tmp_path)


def _edge_packets() -> Iterator[bytes]:
    """Cases around the exclusion rules' edges, on Ethernet."""
    c4, r4, s4 = "10.0.0.1", "10.0.0.53", "93.184.216.34"
    two = b"".join(len(m).to_bytes(2, "big") + m for m in (dns_query("first.tcp.difftest.net", txid=1),
                                                            dns_query("second.tcp.difftest.net", txid=2)))
    yield tcp4(c4, r4, 41001, 53, ACK | PSH, two, seq=1, ack=1)  # two DNS messages in one segment
    yield tcp4(c4, s4, 41002, 80, ACK | PSH, http_request("GET", "/1", host="pipe1.difftest.net")
               + http_request("GET", "/2", host="pipe2.difftest.net"), seq=1, ack=1)  # pipelined requests
    yield udp4(c4, r4, 41003, 53, dns_query("UPPER.Case.DiffTest.net"))
    yield udp4(c4, r4, 41004, 53, dns_query("_dmarc.txt.difftest.net", qtype=16))
    yield tcp4(c4, s4, 41005, 8443, ACK | PSH, tls_client_hello("tls-8443.difftest.net"), seq=1, ack=1)
    yield udp4(c4, "224.0.0.251", 5353, 5353, dns_query("mdns.difftest.net"))  # tshark: mdns, not `dns`
    two_questions = dns_query("q1.two.difftest.net")
    two_questions = (two_questions[:4] + b"\x00\x02" + two_questions[6:]
                     + dns_query("q2.two.difftest.net")[12:])  # excluded: second question
    yield udp4(c4, r4, 41006, 53, two_questions)
    notify = dns_query("notify.difftest.net")
    yield udp4(c4, r4, 41007, 53, notify[:2] + struct.pack("!H", 0x2000) + notify[4:])  # excluded: opcode 4
    quoted = udp4(c4, r4, 41008, 53, dns_query("quoted.icmp.difftest.net"))
    yield icmp4(r4, c4, 3, 3, b"\x00\x00\x00\x00" + quoted)  # excluded: port unreachable quoting a query
    length_alone = dns_query("lenalone.tcp.difftest.net")
    yield tcp4(c4, r4, 41009, 53, ACK, len(length_alone).to_bytes(2, "big"), seq=100, ack=1)
    yield tcp4(c4, r4, 41009, 53, ACK | PSH, length_alone, seq=102, ack=1)  # excluded: reassembled
    hello = tls_client_hello("splithello.difftest.net")
    yield tcp4(c4, s4, 41010, 443, ACK, hello[:100], seq=1, ack=1)
    yield tcp4(c4, s4, 41010, 443, ACK | PSH, hello[100:], seq=101, ack=1)  # excluded: reassembled


def test_edge_cases(tmp_path: Path) -> None:
    capture = tmp_path / "edge.pcap"
    with PcapWriter(capture, linktype=1) as writer:
        for i, packet in enumerate(_edge_packets()):
            writer.write(ethernet(packet), 1_700_000_000 + i / 1000)
    check_capture("edge/ethernet", capture, tmp_path)
