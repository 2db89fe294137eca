"""Cost of decapsulation: the first 4096 packets of the mixed capture through parse + IP matching +
payload inspection (the worker's whole path), as captured and with every frame wrapped in VXLAN
(outer Ethernet / IPv4 / UDP 4789). Figures are µs per packet; the ratio is the tunnel's price."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine import traffic as t
from engine.index.mapped import TrailIndex
from engine.pcapio import read_batches
from workers.batch import parse_batch
from workers.match import IpMatcher
from workers.payload import DetectionSettings, PayloadInspector
from workers.worker import batch_items


def _vxlan_copy(meta: np.ndarray, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same frames, each the payload of a VXLAN packet between two tunnel endpoints."""
    frames = [t.ethernet(t.vxlan("198.51.100.1", "198.51.100.2", data[o:o + n].tobytes()))
              for o, n in zip(meta[:, 2].tolist(), meta[:, 3].tolist(), strict=True)]
    caplen = np.array([len(f) for f in frames], dtype=np.uint32)
    offsets = np.concatenate([[0], np.cumsum(caplen)[:-1]]).astype(np.uint32)
    wrapped = np.stack([meta[:, 0], meta[:, 1], offsets, caplen], axis=1).astype(np.uint32)
    return wrapped, np.frombuffer(b"".join(frames), dtype=np.uint8)


@pytest.mark.parametrize("wrap", ["plain", "vxlan"])
def test_tunnelled_batch(benchmark, wrap: str, mixed_pcap: Path, full_index: Path) -> None:
    batch = next(iter(read_batches(mixed_pcap, 4096)))
    meta, data = batch.meta, np.frombuffer(batch.data, dtype=np.uint8)
    if wrap == "vxlan":
        meta, data = _vxlan_copy(meta, data)
    ix = TrailIndex(full_index)
    matcher, inspector = IpMatcher(ix), PayloadInspector(ix, DetectionSettings())
    events = sum(kind == "event" for _, kind, _ in batch_items(parse_batch(meta, data, 1), data, matcher, inspector))
    benchmark(lambda: batch_items(parse_batch(meta, data, 1), data, matcher, inspector))
    per_packet = benchmark.stats.stats.min / len(meta) * 1e6
    benchmark.extra_info.update(packets_per_round=len(meta), events_per_round=events,
                                us_per_packet=round(per_packet, 3))
    print(f"\n{wrap}: {per_packet:.3f} µs/packet, {events} events per {len(meta)} packets, "
          f"{events / benchmark.stats.stats.min:,.0f} events/s")
