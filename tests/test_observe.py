"""Grouped scan probes (`workers.observe`) leave the heuristics in exactly the state that feeding
the probes one at a time, in capture order, would: same keys in the same order, same port and
target sets, same first probes, same alerts. Timestamps go backwards too (no tick then), and the
caps on keys and items are small enough to be reached."""

from __future__ import annotations

import random
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import traffic as t
from engine.heuristics import (
    INFECTION_PORTS,
    Heuristics,
    HeuristicSettings,
    _Accumulator,
    _is_private,
    _is_private_addr,
)
from engine.ipaddr import ip4_text, parse_ip4, parse_ip6
from workers import observe
from workers.batch import parse_batch
from workers.observe import PROBES, TICK, probe_items, tick_items

SRC4 = ["10.0.0.5", "10.0.0.6", "198.51.100.7"]
DST4 = ["203.0.113.1", "203.0.113.2", "127.0.0.1", "10.0.1.9"]
SRC6 = ["fd00::5", "2001:db8::1:0"]
DST6 = ["2001:db8::9", "::1", "2001:db8:1::"]
FLAGS = [t.SYN, t.SYN, t.SYN, 0x00, t.FIN, 0x29, t.SYN | t.ACK, t.ACK]


def _frames(seed: int, n: int) -> list[tuple[float, bytes, tuple]]:
    rng = random.Random(seed)
    sec = 1_700_000_000
    ports = [22, 80, 443, 8080, 53, 123, 5060, *sorted(INFECTION_PORTS)]
    out = []
    for _ in range(n):
        sec += rng.choice([0, 0, 0, 1, -1, 2])
        v6 = rng.random() < 0.3
        src, dst = (rng.choice(SRC6), rng.choice(DST6)) if v6 else (rng.choice(SRC4), rng.choice(DST4))
        sport, dport = rng.randint(1024, 1030), rng.choice(ports)
        if rng.random() < 0.6:
            flags = rng.choice(FLAGS)
            l3 = (t.tcp6 if v6 else t.tcp4)(src, dst, sport, dport, flags)
            probe = ("tcp", src, dst, sport, dport, flags)
        else:
            l3 = (t.udp6 if v6 else t.udp4)(src, dst, sport, dport, b"x")
            probe = ("udp", src, dst, sport, dport, 0)
        out.append((sec + rng.random(), t.ethernet(l3), probe))
    return out


def _key(addr: str) -> int | bytes:
    ip = parse_ip4(addr)
    return ip if ip is not None else parse_ip6(addr)


def _every_key_due(acc: _Accumulator, tag: str | None = None) -> list[tuple]:
    """The reference sweep: every key of the window (of the tag) checked against its limit."""
    acc.over.clear()
    return [k for k in acc.keys if (tag is None or k[0] == tag) and acc.size(k) > acc.limits.get(k[0], acc.limit)]


def _one_at_a_time(frames: list, settings: HeuristicSettings) -> tuple[Heuristics, list]:
    """The reference: Maltrail's order, a sweep at each later second going over every key, one
    probe at a time."""
    with patch.object(_Accumulator, "due", _every_key_due):
        return _reference(frames, settings)


def _reference(frames: list, settings: HeuristicSettings) -> tuple[Heuristics, list]:
    h = Heuristics(settings, lambda ip: False)
    events, last = [], None
    for ts, _, (proto, src, dst, sport, dport, flags) in frames:
        sec = int(ts)
        if last is None or sec > last:
            events += h.tick(sec, 0)
            last = sec
        if dst in ("127.0.0.1", "::1") or (proto == "udp" and dport == 53):
            continue
        s, d = _key(src), _key(dst)
        if proto == "tcp" and flags in (t.SYN, 0x00, t.FIN, 0x29):
            h.tcp.add(("p", s, d), dport, (sport, dport))
            if flags == t.SYN and dport in INFECTION_PORTS:
                h.tcp.add(("i", s, dport), d, (sport, d))
        elif proto == "udp":
            h.udp.add(("u", s, d), dport, (sport, dport))
    return h, events


def _grouped(frames: list, settings: HeuristicSettings, batch: int) -> tuple[Heuristics, list]:
    h = Heuristics(settings, lambda ip: False)
    events = []
    for start in range(0, len(frames), batch):
        chunk = frames[start:start + batch]
        data = b"".join(f for _, f, _ in chunk)
        lengths = np.array([len(f) for _, f, _ in chunk], np.uint32)
        meta = np.stack([np.array([int(ts) for ts, _, _ in chunk], np.uint32), np.zeros(len(chunk), np.uint32),
                         np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.uint32), lengths], axis=1)
        p = parse_batch(meta, np.frombuffer(data, np.uint8), 1)
        items = probe_items(p) + tick_items(p)
        items.sort(key=lambda item: (item[0], item[1] != TICK))
        for _, kind, args in items:
            if kind == TICK:
                events += h.tick(*args)
            elif kind == PROBES:
                h.probes(*args)
    return h, events


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("batch", [7, 64, 5000])
def test_grouped_probes_equal_one_at_a_time(seed: int, batch: int) -> None:
    frames = _frames(seed, 3000)
    settings = HeuristicSettings(port_scan_threshold=3, udp_scan_threshold=3, infection_threshold=1,
                                 max_keys=12 + seed, max_items_per_key=4 + seed, scan_window=3)
    ref, ref_events = _one_at_a_time(frames, settings)
    got, got_events = _grouped(frames, settings, batch)
    for name in ("tcp", "udp"):
        a, b = getattr(ref, name), getattr(got, name)
        assert list(a.keys) == list(b.keys)  # same keys, same insertion order
        assert a.keys == b.keys  # same ranks, first probes and items
    assert any("scanning" in ev[9] for ev in ref_events)
    assert seed != 0 or any("infection" in ev[9] for ev in ref_events)
    assert ref_events == got_events
    assert ref.alerted == got.alerted


@pytest.mark.parametrize("seed", range(3))
def test_grouped_probes_equal_one_at_a_time_when_every_key_hash_collides(seed: int) -> None:
    """Probes are grouped by a hash of their key; keys whose hashes collide must still be told
    apart (here every key gets the same hash, so the exact fallback does all the work)."""
    frames = _frames(seed, 2000)
    settings = HeuristicSettings(port_scan_threshold=3, udp_scan_threshold=3, infection_threshold=1,
                                 max_keys=12 + seed, max_items_per_key=4 + seed, scan_window=3)
    ref, ref_events = _one_at_a_time(frames, settings)
    with patch.object(observe, "_MIX", np.uint64(0)):
        got, got_events = _grouped(frames, settings, 500)
    for name in ("tcp", "udp"):
        assert list(getattr(ref, name).keys) == list(getattr(got, name).keys)
        assert getattr(ref, name).keys == getattr(got, name).keys
    assert ref_events == got_events


@given(st.integers(0, 2**32 - 1) | st.sampled_from([
    0x0A000000, 0x09FFFFFF, 0x0B000000, 0x7F000001, 0xAC0FFFFF, 0xAC100000, 0xAC1FFFFF, 0xAC200000, 0xC0A80000,
    0xC0A7FFFF, 0xC0A90000, 0xA9FE0001]))
def test_private_address_test_on_integers(ip: int) -> None:
    assert _is_private_addr(ip) == _is_private(ip4_text(ip))


@given(st.lists(st.tuples(st.sampled_from(["p", "i", "u"]), st.integers(0, 5), st.integers(0, 6)), max_size=120),
       st.integers(0, 6), st.integers(0, 5), st.integers(0, 4))
def test_accumulator_is_a_capped_map_of_sets(ops: list[tuple[str, int, int]], max_keys: int, max_items: int,
                                             limit: int) -> None:
    """The compact representation (a lone item until a second one comes) against plain sets."""
    acc = _Accumulator(max_keys, max_items, {"p": limit, "i": limit + 1}, limit)
    sets: dict[tuple, set] = {}
    first: dict[tuple, tuple] = {}
    over: list[tuple] = []
    for n, (tag, k, item) in enumerate(ops):
        key = (tag, k)
        acc.add(key, item, (n,))
        if key not in sets:
            if len(sets) >= max_keys:
                continue
            sets[key], first[key] = {item}, (n,)
        elif len(sets[key]) < max_items:
            sets[key].add(item)
        else:
            continue
        if len(sets[key]) > {"p": limit, "i": limit + 1}.get(tag, limit) and key not in over:
            over.append(key)
    assert list(acc.keys) == list(sets)
    assert {key: acc.size(key) for key in acc.keys} == {key: len(items) for key, items in sets.items()}
    assert {key: acc.first(key) for key in acc.keys} == first
    assert acc.due() == sorted(over, key=list(sets).index)


@pytest.mark.parametrize("seed", range(4))
def test_probe_columns_are_each_segments_first_of_every_key(seed: int) -> None:
    """The grouped columns hold, per segment, the first probe of each (protocol, source,
    destination, destination port, SYN-ness), in capture order: ports that share a low byte and
    SYN after FIN on the same addresses are told apart."""
    rng = random.Random(seed)
    frames, sec = [], 1_700_000_000
    for _ in range(2000):
        sec += rng.choice([0, 0, 0, 0, 1])
        v6 = rng.random() < 0.3
        src, dst = (rng.choice(SRC6), rng.choice(DST6)) if v6 else (rng.choice(SRC4), rng.choice(DST4))
        sport, dport = rng.randint(1024, 1026), rng.choice([80, 80 + 256, 80 + 512, 8080])
        tcp = rng.random() < 0.7
        flags = rng.choice([t.SYN, t.FIN, 0x00]) if tcp else 0
        l3 = ((t.tcp6 if v6 else t.tcp4)(src, dst, sport, dport, flags) if tcp
              else (t.udp6 if v6 else t.udp4)(src, dst, sport, dport, b"x"))
        frames.append((sec, t.ethernet(l3), (6 if tcp else 17, src, dst, sport, dport, flags == t.SYN)))
    lengths = np.array([len(f) for _, f, _ in frames], np.uint32)
    meta = np.stack([np.array([s for s, _, _ in frames], np.uint32), np.zeros(len(frames), np.uint32),
                     np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.uint32), lengths], axis=1)
    p = parse_batch(meta, np.frombuffer(b"".join(f for _, f, _ in frames), np.uint8), 1)
    got = [list(zip(*columns, strict=True)) for _, _, columns in probe_items(p)]
    want: list[list[tuple]] = []
    seen: set[tuple] = set()
    last = None
    for s, _, (proto, src, dst, sport, dport, syn) in frames:
        if last is None or s > last:
            want.append([])
            seen.clear()
            last = s
        if dst in ("127.0.0.1", "::1"):
            continue
        probe = (proto, _key(src), _key(dst), sport, dport, syn)
        if (proto, probe[1], probe[2], dport, syn) not in seen:
            seen.add((proto, probe[1], probe[2], dport, syn))
            want[-1].append(probe)
    assert got == [segment for segment in want if segment]
