"""The traffic mixes `maltrail bench` offers: each is valid traffic of the promised shape."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import pytest

from engine import traffic as t
from engine.pcapio import read_batches


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
    assert set(mixes) == {"mixed", "bulk", "dns-heavy", "http-heavy", "syn-flood"}
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
