"""The traffic mixes `maltrail bench` offers: each is valid traffic of the promised shape."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import pytest

from engine import traffic as t
from engine.config import SensorConfig
from engine.index.build import build_index_file
from engine.pcapio import read_batches
from engine.sensor import run_sensor


def _frames(path: Path) -> list[bytes]:
    out = []
    for batch in read_batches(path):
        out += [batch.data[off:off + cap] for _, _, off, cap in batch.meta.tolist()]
    return out


def _kind(frame: bytes) -> str:
    """dns / http / tls / syn / other, from the Ethernet frame of an IPv4 or IPv6 packet."""
    v6 = struct.unpack("!H", frame[12:14])[0] == 0x86DD
    proto, l4 = (frame[20], frame[54:]) if v6 else (frame[23], frame[14 + (frame[14] & 0x0F) * 4:])
    if proto == 17 and 53 in struct.unpack("!HH", l4[:4]):
        return "dns"
    if proto == 6:
        if l4[13] & (t.SYN | t.ACK) == t.SYN:
            return "syn"
        ports = struct.unpack("!HH", l4[:4])
        return "http" if 80 in ports else "tls" if 443 in ports else "other"
    return "other"


@pytest.fixture(scope="module")
def mixes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, Counter[str], list[bytes]]]:
    work = tmp_path_factory.mktemp("mixes")
    out = {}
    for name in t.MIXES:
        info = t.mixed_capture(work / f"{name}.pcap", 20_000, seed=2, mix=name, trail_ips=("198.51.100.66",))
        frames = _frames(work / f"{name}.pcap")
        out[name] = (info, Counter(_kind(f) for f in frames), frames)
    return out


def test_every_mix_is_valid_and_full(mixes: dict[str, tuple[dict, Counter[str], list[bytes]]]) -> None:
    assert set(mixes) == {"unique", "mixed", "bulk", "dns-heavy", "http-heavy", "syn-flood"}
    for name, (info, _, frames) in mixes.items():
        assert len(frames) == info["packets"] == 20_000, name
        assert info["bytes"] == sum(map(len, frames)), name


def test_mix_shapes(mixes: dict[str, tuple[dict, Counter[str], list[bytes]]]) -> None:
    share = {name: {k: v / 20_000 for k, v in kinds.items()} for name, (_, kinds, _) in mixes.items()}
    assert 250 <= mixes["mixed"][0]["mean_frame"] <= 350
    bulk_sizes = Counter(len(f) for f in mixes["bulk"][2])
    assert bulk_sizes[t.BULK_FRAME] / 20_000 > 0.8 and mixes["bulk"][0]["mean_frame"] > 1100
    assert share["dns-heavy"]["dns"] > 0.7
    assert share["http-heavy"]["http"] > 0.7
    assert share["syn-flood"]["syn"] > 0.8 and mixes["syn-flood"][0]["mean_frame"] < 80


def test_syn_flood_sources_are_many(mixes: dict[str, tuple[dict, Counter[str], list[bytes]]]) -> None:
    sources = {f[26:30] for f in mixes["syn-flood"][2] if _kind(f) == "syn"}
    assert len(sources) > 1000


def test_mixes_are_deterministic_and_unknown_is_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    t.mixed_capture(a, 3000, seed=4, mix="bulk")
    t.mixed_capture(b, 3000, seed=4, mix="bulk")
    assert a.read_bytes() == b.read_bytes()
    with pytest.raises(ValueError, match="unknown traffic mix 'huge'"):
        t.mixed_capture(tmp_path / "x.pcap", 10, mix="huge")


# --- the `unique` mix: everything new ---------------------------------------------------------

UNIQUE_PACKETS = 30_000
PLANTED = ("listed-planted-one.com", "listed-planted-two.net", "listed-planted-three.org")


_RESOLVERS = {t._addr(a) for a in ("10.0.0.53", "10.0.0.54", "fd00:10::53")}


def _flow_key(frame: bytes) -> tuple[str, bytes, bytes, str]:
    """(kind, inside address, its port, protocol) of a packet: the client end identifies the flow, as
    every flow of the mix has a new client (address, port)."""
    v6 = frame[12:14] == b"\x86\xdd"
    proto, src, dst, l4 = ((frame[20], frame[22:38], frame[38:54], frame[54:]) if v6 else
                           (frame[23], frame[26:30], frame[30:34], frame[14 + (frame[14] & 0x0F) * 4:]))
    inside_src = ((src[0] == 0xFD) if v6 else (src[0] == 10)) and src not in _RESOLVERS
    client = src if inside_src else dst
    if proto in (1, 58):
        return "icmp", client, b"", "icmp"
    ports = l4[:4]
    return ("v6" if v6 else "v4"), client, ports[:2] if inside_src else ports[2:4], "tcp" if proto == 6 else "udp"


def _classify(frames: list[bytes]) -> tuple[Counter[str], dict[tuple, str]]:
    """Packets per kind of flow (dns, http, tls, quic, syn, udp, icmp, bulk) and the kind of each flow."""
    flows: dict[tuple, list[bytes]] = {}
    for f in frames:
        flows.setdefault(_flow_key(f), []).append(f)
    kinds: dict[tuple, str] = {}
    for key, packets in flows.items():
        first = packets[0]
        v6 = first[12:14] == b"\x86\xdd"
        l4 = first[54:] if v6 else first[14 + (first[14] & 0x0F) * 4:]
        ports = set(struct.unpack("!HH", l4[:4])) if key[3] != "icmp" else set()
        if key[3] == "icmp":
            kinds[key] = "icmp"
        elif key[3] == "udp":
            kinds[key] = "dns" if 53 in ports else "quic" if 443 in ports else "udp"
        elif len(packets) == 1 and l4[13] & (t.SYN | t.ACK) == t.SYN:
            kinds[key] = "syn"
        elif 80 in ports:
            kinds[key] = "http"
        else:  # 443: a full TLS flow begins with a SYN, bulk is a flow already under way
            kinds[key] = "tls" if l4[13] & t.SYN else "bulk"
    return Counter(kinds[_flow_key(f)] for f in frames), kinds


@pytest.mark.parametrize("seed, shares", [(2, t.UniqueShares()),
                                          (9, t.UniqueShares(dns=0.12, http=0.03, tls=0.01, quic=0.02, ipv6=0.08))])
def test_unique_mix_proportions(tmp_path: Path, seed: int, shares: t.UniqueShares) -> None:
    t.mixed_capture(tmp_path / "u.pcap", UNIQUE_PACKETS, seed=seed, mix="unique", shares=shares)
    frames = _frames(tmp_path / "u.pcap")
    counts, _ = _classify(frames)
    for kind, share in shares.kinds().items():
        # flows cut at the end of the capture blur the figure a little; 15 % relative, 0.2 points absolute
        assert abs(counts[kind] / len(frames) - share) <= max(0.15 * share, 0.002), (kind, counts[kind], share)
    v6 = sum(f[12:14] == b"\x86\xdd" for f in frames) / len(frames)
    assert abs(v6 - shares.ipv6) <= 0.5 * shares.ipv6  # bulk flows are long: their draw moves the share most


def test_unique_mix_everything_is_new(tmp_path: Path) -> None:
    t.mixed_capture(tmp_path / "u.pcap", UNIQUE_PACKETS, seed=3, mix="unique", trail_names=PLANTED)
    frames = _frames(tmp_path / "u.pcap")
    names, uas, paths, snis = [], [], [], []
    for f in frames:
        if f[12:14] != b"\x08\x00":
            continue
        l4 = f[14 + (f[14] & 0x0F) * 4:]
        if f[23] == 17 and l4[2:4] == b"\x00\x35":  # DNS query
            end = l4[20:].index(b"\x00")
            names.append(l4[20:20 + end])
        elif f[23] == 6 and l4[2:4] == b"\x00\x50" and l4[(l4[12] >> 4) * 4:][:4] == b"GET ":  # HTTP request
            head = l4[(l4[12] >> 4) * 4:].split(b"\r\n\r\n")[0].split(b"\r\n")
            paths.append(head[0].split(b" ")[1])
            uas += [line for line in head if line.startswith(b"User-Agent:")]
            names += [line for line in head if line.startswith(b"Host:")]
        elif f[23] == 6 and l4[2:4] == b"\x01\xbb" and l4[(l4[12] >> 4) * 4:][:1] == b"\x16":
            snis.append(l4[(l4[12] >> 4) * 4:])  # the ClientHello record, SNI-derived throughout
    _, kinds = _classify(frames)
    ports = [key[2] for key, kind in kinds.items() if kind != "icmp"]
    assert len(names) > 1000 and len(paths) > 30 and len(snis) > 10
    for values in (names, uas, paths, snis, ports):
        assert len(set(values)) == len(values)
    assert all(58 <= len(p) <= 80 and b"?" in p for p in paths)
    assert len({ua.split(b"(")[0] + ua.split(b")")[-1].split(b"/")[0] for ua in uas}) >= 3  # several families


def test_unique_mix_is_deterministic(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    assert t.mixed_capture(a, 3000, seed=4, mix="unique") == t.mixed_capture(b, 3000, seed=4, mix="unique")
    t.mixed_capture(c, 3000, seed=5, mix="unique")
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_unique_mix_replays_through_the_sensor(tmp_path: Path) -> None:
    csv = tmp_path / "trails.csv"
    csv.write_text("".join(f"{name},planted (test),(test)\n" for name in PLANTED) + "198.51.100.66,planted ip,(test)\n")
    index = tmp_path / "trails.mtidx"
    build_index_file([str(csv)], index)
    capture = tmp_path / "u.pcap"
    info = t.mixed_capture(capture, 60_000, seed=6, mix="unique", trail_ips=("198.51.100.66",), trail_names=PLANTED)
    cfg = SensorConfig(name="test", trails=str(index), log_dir=str(tmp_path / "logs"), workers=2)
    summary = run_sensor(cfg, [capture])
    assert summary.packets == 60_000
    assert summary.status["counters"]["malformed"] == 0
    events = "".join(p.read_text() for p in (tmp_path / "logs").rglob("*.log"))
    assert all(name in events for name in PLANTED)
    assert info["trail_syns"]["198.51.100.66"] > 0 and "198.51.100.66" in events
