"""A real busy link: a veth pair whose far end lives in a network namespace this test owns.

The sensor captures live on the near end (libpcap through pcapy-ng); a sender inside the namespace
writes a known list of Ethernet frames (trail hits among them) onto the far end at a fixed rate
with an AF_PACKET socket. Every packet is then accounted for:

    sent == kernel received                          (libpcap's ps_recv: packets that passed the BPF
                                                      filter, dropped ones included)
    kernel received == captured + kernel dropped     (ps_drop: the capture buffer was full)
    captured == processed + ring dropped             (our rings: exact by construction)

The first identity holds because a veth hands a frame to the receiving side synchronously: a frame
the receiver's backlog cannot take makes the sender's `send` fail (ENOBUFS), and such frames are
not counted as sent. libpcap's interface-drop figure (/proc/net/dev rx_dropped) is reported but not
part of the sum: on Linux it also counts frames the stack discards after the capture tap has seen
them, so adding it would double count. The BPF filter keeps only the sender's TCP/UDP frames, and
IPv6 is off on both ends, so nothing else reaches the sensor.

Drops are forced with real stalls, no test hook: SIGSTOP on the only worker (with a 2-slot ring
and 64-packet batches, the ring fills and every further batch is dropped and counted), or SIGSTOP
on the capture process itself (with a 1 MiB kernel buffer, the kernel drops and counts).

After the kernel buffer has been full (TPACKET_V3 "frozen" queue), the kernel may keep the last
few packets in a block it retires only when more traffic comes; so while packets are missing,
the sender adds a few more (counted as sent like the rest) to push them out.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine import traffic as t
from engine.pcapio import PcapWriter
from engine.proctree import children, descendants

ROOT = Path(__file__).resolve().parents[1]
TRAIL_IP = "198.51.100.66"
TRAIL_IPPORT = ("203.0.113.5", 8443)
TRAILS = f"{TRAIL_IP},malware (veth test),(static)\n{TRAIL_IPPORT[0]}:{TRAIL_IPPORT[1]},c2 (veth test),(static)\n"

SENDER = r"""
import json, socket, struct, sys, time
iface, path, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
data = open(path, "rb").read()
frames, pos = [], 24
while pos < len(data):
    incl = struct.unpack_from("<I", data, pos + 8)[0]
    frames.append(data[pos + 16:pos + 16 + incl])
    pos += 16 + incl
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
failed = []
start = time.perf_counter()
for i, frame in enumerate(frames):
    due = start + i / rate
    while (now := time.perf_counter()) < due:
        if due - now > 0.002:
            time.sleep(due - now - 0.001)
    try:
        s.send(frame)
    except OSError:
        failed.append(i)
print(json.dumps({"sent": len(frames) - len(failed), "failed": failed}))
"""


@dataclass
class Link:
    namespace: str
    host_if: str
    ns_if: str
    host_mac: str
    ns_mac: str
    subnet: str  # "10.a.b", the host end is .1, the namespace end .2


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _disable_ipv6(path: str) -> None:
    with contextlib.suppress(OSError):
        Path(path).write_text("1")


@pytest.fixture
def link() -> Iterator[Link]:
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (the ip command) is not installed")
    tag = f"{os.getpid() % 10000:04d}{secrets.token_hex(2)}"
    namespace, host_if, ns_if = f"mtveth{tag}", f"mt{tag}h", f"mt{tag}n"
    made = _ip("netns", "add", namespace, check=False)
    if made.returncode != 0:
        pytest.skip(f"network namespaces not permitted here (ip netns add: {made.stderr.strip()})")
    subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}"
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", namespace)
        _disable_ipv6(f"/proc/sys/net/ipv6/conf/{host_if}/disable_ipv6")
        _ip("addr", "add", f"{subnet}.1/24", "dev", host_if)
        _ip("link", "set", host_if, "up")
        inside = ("ip", "netns", "exec", namespace)
        subprocess.run([*inside, "sh", "-c", f"echo 1 > /proc/sys/net/ipv6/conf/{ns_if}/disable_ipv6; "
                        f"ip addr add {subnet}.2/24 dev {ns_if} && ip link set {ns_if} up && ip link set lo up"],
                       check=True, capture_output=True, timeout=30)
        ns_mac = subprocess.run([*inside, "cat", f"/sys/class/net/{ns_if}/address"], check=True,
                                capture_output=True, text=True, timeout=30).stdout.strip()
        host_mac = Path(f"/sys/class/net/{host_if}/address").read_text().strip()
        yield Link(namespace, host_if, ns_if, host_mac, ns_mac, subnet)
    finally:
        _ip("link", "del", host_if, check=False)  # removes both ends
        _ip("netns", "del", namespace, check=False)


def _frames(link: Link, count: int, hit_every: int, first: int = 0) -> tuple[list[bytes], list[int]]:
    """`count` frames from the namespace end; every `hit_every`-th is a trail hit (a UDP datagram
    to the IP trail or a SYN to the IP:port trail), each from its own source port so no two
    events collapse as duplicates."""
    src = f"{link.subnet}.2"
    frames, hits = [], []
    for i in range(first, first + count):
        if i % hit_every == hit_every // 2:
            hits.append(i)
            if len(hits) % 2:
                l3 = t.udp4(src, TRAIL_IP, 20000 + i, 9999, b"beacon %d" % i)
            else:
                l3 = t.tcp4(src, TRAIL_IPPORT[0], 20000 + i, TRAIL_IPPORT[1], t.SYN, seq=i)
        elif i % 3:
            l3 = t.udp4(src, f"{link.subnet}.1", 30000 + i % 20000, 5000 + i % 7, bytes(120 + i % 200))
        else:
            l3 = t.tcp4(src, "93.184.216.34", 30000 + i % 20000, 443, t.PSH | t.ACK, bytes(200 + i % 900))
        frames.append(t.ethernet(l3, src_mac=link.ns_mac, dst_mac=link.host_mac))
    return frames, hits


def _send(link: Link, frames: list[bytes], rate: float, work: Path) -> dict:
    pcap = work / "send.pcap"
    with PcapWriter(pcap) as w:
        for frame in frames:
            w.write(frame, 1_700_000_000.0)
    done = subprocess.run(["ip", "netns", "exec", link.namespace, sys.executable, "-c", SENDER, link.ns_if,
                           str(pcap), str(rate)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _start_sensor(link: Link, work: Path, config: str) -> subprocess.Popen[str]:
    """The sensor's output goes to files: a pipe held open by its children would make a reader
    wait for them."""
    (work / "trails.csv").write_text(TRAILS)
    (work / "maltrail.toml").write_text("[sensor]\n" + config)
    with open(work / "sensor.out", "w") as out, open(work / "sensor.err", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "sensor", "-c", str(work / "maltrail.toml"),
                                 "--trails", str(work / "trails.csv"), "-i", link.host_if, "--no-promisc",
                                 "--bpf", f"ether src {link.ns_mac} and (udp or tcp)",
                                 "--log-dir", str(work / "logs")], cwd=ROOT, stdout=out, stderr=err, text=True,
                                start_new_session=True)  # its own process group, as a service unit's
    deadline = time.monotonic() + 30
    while not (work / "logs" / "sensor-status.json").exists():  # every process ready, capture open
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"sensor did not start: {(work / 'sensor.err').read_text()}")
        time.sleep(0.05)
    return proc


def _status(work: Path) -> dict:
    return json.loads((work / "logs" / "sensor-status.json").read_text())


def _accounted(status: dict, sent: int) -> bool:
    """Every sent packet is processed or counted as dropped (and none is still in a buffer)."""
    kernel = status["capture"]["kernel"]
    if not kernel:
        return False
    captured = status["capture"]["packets"]
    ring = sum(r["dropped_packets"] for r in status["rings"])
    return (kernel["received"] == sent and captured + kernel["dropped"] == kernel["received"]
            and status["counters"].get("packets", 0) + ring == captured)


def _stop(proc: subprocess.Popen[str], link: Link, work: Path, sent: int,
          stop: Callable[[subprocess.Popen[str]], None] = lambda p: p.send_signal(signal.SIGINT)
          ) -> tuple[dict, str, int]:
    """Once every packet sent (nudges included) is accounted for, stop the sensor (Ctrl-C unless
    `stop` says otherwise): its final status, its output and the number of packets sent in all."""
    deadline = time.monotonic() + 30
    nudge_at = time.monotonic() + 3
    while not _accounted(status := _status(work), sent):
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"packets unaccounted for after 30 s: sent {sent}, status {json.dumps(status)}")
        if time.monotonic() > nudge_at:
            sent += _send(link, _frames(link, 5, 1_000_000, first=10_000_000)[0], 1000, work)["sent"]
            nudge_at = time.monotonic() + 3
        time.sleep(0.1)
    stop(proc)
    assert proc.wait(timeout=60) == 0, (work / "sensor.err").read_text()
    return _status(work), (work / "sensor.out").read_text(), sent


def _events(work: Path) -> list[str]:
    return [line for f in sorted((work / "logs").glob("*.log")) for line in f.read_text().splitlines()]


def _hit_ports(work: Path) -> list[int]:
    return sorted(int(line.split(" ")[4]) - 20000 for line in _events(work))


def _identity(status: dict, sent: int) -> tuple[int, int, int]:
    """(processed, ring dropped, kernel dropped), checking they add up to `sent` exactly."""
    processed = status["counters"]["packets"]
    ring = sum(r["dropped_packets"] for r in status["rings"])
    kernel = status["capture"]["kernel"]
    assert status["final"] and kernel["received"] == sent
    assert processed + ring + kernel["dropped"] == sent
    assert status["capture"]["ring_dropped_packets"] == ring
    return processed, ring, kernel["dropped"]


def test_every_trail_hit_reported_when_nothing_is_dropped(link: Link, tmp_path: Path) -> None:
    frames, hits = _frames(link, 4000, 40)
    proc = _start_sensor(link, tmp_path, "workers = 2\n")
    sent = _send(link, frames, 20_000, tmp_path)
    assert sent["sent"] > 0
    status, out, total = _stop(proc, link, tmp_path, sent["sent"])
    processed, ring, kernel = _identity(status, total)
    # 4,000 packets fit in the 64 MiB kernel buffer and in the 8 ring slots: nothing can be dropped.
    assert (ring, kernel) == (0, 0) and processed == total
    delivered_hits = [i for i in hits if i not in set(sent["failed"])]
    assert _hit_ports(tmp_path) == delivered_hits
    assert all(f"{link.subnet}.2" in line and "(veth test)" in line for line in _events(tmp_path))
    assert "drops        0 (ring: w0=0 w1=0), 0 (kernel)" in out


def _pids_of_workers(proc: subprocess.Popen[str], work: Path) -> list[int]:
    aggregator = _status(work)["pid"]
    direct = set(children(proc.pid))
    return [p for p in descendants(proc.pid) if p not in direct and p != aggregator]


def test_a_stalled_worker_loses_packets_counted_exactly(link: Link, tmp_path: Path) -> None:
    frames, hits = _frames(link, 3000, 30)
    proc = _start_sensor(link, tmp_path, "workers = 1\nring_slots = 2\nbatch_packets = 64\nring_slot_kb = 512\n")
    (worker,) = _pids_of_workers(proc, tmp_path)
    os.kill(worker, signal.SIGSTOP)
    try:
        sent = _send(link, frames, 20_000, tmp_path)
        deadline = time.monotonic() + 20  # every packet read by the capture before the worker resumes
        while _status(tmp_path)["capture"]["packets"] + (_status(tmp_path)["capture"]["kernel"] or {}).get(
                "dropped", 0) < sent["sent"] and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        os.kill(worker, signal.SIGCONT)
    status, out, total = _stop(proc, link, tmp_path, sent["sent"])
    processed, ring, kernel = _identity(status, total)
    assert ring > 0 and processed <= 2 * 64  # two queued batches survived the stall
    assert status["rings"][0]["dropped_packets"] == ring and status["rings"][0]["dropped_batches"] > 0
    reported = _hit_ports(tmp_path)
    assert set(reported) <= set(hits) and len(reported) <= processed
    assert f"drops        {ring} (ring: w0={ring}), {kernel} (kernel)" in out


def test_a_stalled_capture_loses_packets_in_the_kernel_counted_exactly(link: Link, tmp_path: Path) -> None:
    frames, hits = _frames(link, 20_000, 100)
    proc = _start_sensor(link, tmp_path, "workers = 1\ncapture_buffer_mb = 1\n")
    os.kill(proc.pid, signal.SIGSTOP)  # the capture process: nothing reads the kernel buffer
    try:
        sent = _send(link, frames, 50_000, tmp_path)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    status, out, total = _stop(proc, link, tmp_path, sent["sent"])
    processed, ring, kernel = _identity(status, total)
    assert kernel > 0 and processed == total - kernel - ring
    reported = _hit_ports(tmp_path)
    assert set(reported) <= set(hits) and len(reported) <= processed
    assert f", {kernel} (kernel)" in out


def test_group_sigterm_stops_a_live_capture_gracefully_losing_no_event(link: Link, tmp_path: Path) -> None:
    """What `systemctl stop` does: SIGTERM to every process of the group at once."""
    frames, hits = _frames(link, 4000, 40)
    proc = _start_sensor(link, tmp_path, "workers = 2\n")
    sent = _send(link, frames, 20_000, tmp_path)
    status, out, total = _stop(proc, link, tmp_path, sent["sent"], lambda p: os.killpg(p.pid, signal.SIGTERM))
    processed, ring, kernel = _identity(status, total)
    assert "summary: (interrupted)" in out and "died" not in (tmp_path / "sensor.err").read_text()
    assert (ring, kernel) == (0, 0) and processed == total
    assert _hit_ports(tmp_path) == [i for i in hits if i not in set(sent["failed"])]
