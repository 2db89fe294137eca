"""Prometheus metrics of a running sensor (`maltrail sensor --metrics HOST:PORT`, `[sensor] metrics`).

The exposition is prometheus_client's; the figures are the aggregator's status file, read at each
scrape, so the metrics say exactly what `maltrail status` says (packets, bytes, drops by cause,
ring occupancy, per-worker load, events by type, the index's generation and age, every output's
counters) and the capture path pays nothing for them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.livestats import StatusError, read_status, sensor_state


def _counter(name: str, doc: str, labels: list[str], rows: list[tuple[list[str], float]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        family.add_metric(values, value)
    return family


def _gauge(name: str, doc: str, labels: list[str], rows: list[tuple[list[str], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in rows:
        family.add_metric(values, value)
    return family


def status_metrics(status: dict[str, Any], now: float) -> Iterator[Metric]:
    """Every metric of one status (a pure function: tested without a server)."""
    c = status.get("counters", {})
    capture = status.get("capture") or {}
    kernel = capture.get("kernel") or {}
    rings = status.get("rings", [])
    state, _ = sensor_state(status, now)
    yield _gauge("maltrail_up", "1 while the sensor runs and publishes its status", [], [([], state == "running")])
    yield _gauge("maltrail_status_age_seconds", "Seconds since the aggregator last wrote its status", [],
                 [([], max(0.0, now - float(status["updated"])))])
    yield _counter("maltrail_captured_packets", "Packets read from the interface or capture files", [],
                   [([], capture.get("packets", 0))])
    yield _counter("maltrail_packets", "Packets processed by the workers", [], [([], c.get("packets", 0))])
    yield _counter("maltrail_bytes", "Bytes processed by the workers", [], [([], c.get("bytes", 0))])
    yield _counter("maltrail_malformed_packets", "Packets the workers could not parse", [],
                   [([], c.get("malformed", 0))])
    drops = [(["ring"], sum(r.get("dropped_packets", 0) for r in rings))]
    if kernel:
        drops += [(["kernel"], kernel.get("dropped", 0)), (["interface"], kernel.get("interface_dropped", 0))]
    yield _counter("maltrail_dropped_packets", "Packets lost before matching, by cause", ["cause"], drops)
    yield _gauge("maltrail_ring_occupancy", "Batches waiting in each worker's ring", ["ring"],
                 [([str(i)], r.get("occupancy", 0)) for i, r in enumerate(rings)])
    yield _gauge("maltrail_ring_slots", "Slots of each worker's ring", ["ring"],
                 [([str(i)], r.get("slots", 0)) for i, r in enumerate(rings)])
    yield _counter("maltrail_worker_packets", "Packets processed per worker", ["worker"],
                   [([str(i)], n) for i, n in enumerate(status.get("per_worker_packets", []))])
    yield _counter("maltrail_worker_busy_seconds", "Seconds each worker spent working", ["worker"],
                   [([str(i)], n) for i, n in enumerate(status.get("per_worker_busy_seconds", []))])
    busy = (status.get("interval") or {}).get("per_worker_busy_fraction", [])
    yield _gauge("maltrail_worker_busy_ratio", "Busy fraction of each worker over the last second", ["worker"],
                 [([str(i)], b) for i, b in enumerate(busy)])
    yield _counter("maltrail_events", "Events logged (and sent to the outputs), by event type", ["type"],
                   [([k], v) for k, v in sorted((status.get("events_by_type") or {}).items())])
    yield _counter("maltrail_events_filtered", "Events not logged, by reason", ["reason"], [
        (["collapsed"], status.get("events_suppressed", 0)), (["whitelisted"], status.get("events_whitelisted", 0)),
        (["ignored"], status.get("events_ignored", 0)), (["ignore_regex"], status.get("events_ignored_regex", 0))])
    index = status.get("index") or {}
    if index:
        yield _gauge("maltrail_index_generation", "Trail index generation in use (1 + reloads)", [],
                     [([], index.get("generation", 0))])
        yield _gauge("maltrail_index_trails", "Trails in the index in use", [], [([], index.get("trails", 0))])
        if index.get("built_at"):
            yield _gauge("maltrail_index_age_seconds", "Seconds since the index in use was built", [],
                         [([], max(0.0, now - float(index["built_at"])))])
        yield _counter("maltrail_index_reloads", "Index reloads, by result", ["result"],
                       [(["ok"], index.get("reloads", 0)), (["failed"], index.get("reload_failures", 0))])
    outputs = status.get("outputs", [])
    labels = ["output", "type"]
    yield _counter("maltrail_output_sent_events", "Events delivered to each output", labels,
                   [([o["name"], o["type"]], o["sent"]) for o in outputs])
    yield _counter("maltrail_output_dropped_events", "Events that did not reach each output, by reason",
                   [*labels, "reason"],
                   [([o["name"], o["type"], reason], o[key]) for o in outputs
                    for reason, key in (("queue_full", "dropped_queue_full"), ("failed", "failed"),
                                        ("unsent_at_exit", "abandoned_at_exit"),
                                        ("unacknowledged", "unacknowledged"))])
    yield _counter("maltrail_output_retries", "Delivery retries of each output", labels,
                   [([o["name"], o["type"]], o["retries"]) for o in outputs])
    yield _gauge("maltrail_output_retrying", "1 while an output is retrying a failed delivery", labels,
                 [([o["name"], o["type"]], bool(o["retrying"])) for o in outputs])
    yield _gauge("maltrail_output_queued_events", "Events waiting in each output's queue", labels,
                 [([o["name"], o["type"]], o["queued"]) for o in outputs])


class StatusCollector(Collector):
    """Reads the status file at every scrape; nothing (but maltrail_up 0) before the first one."""

    def __init__(self, status_path: Path) -> None:
        self.status_path = status_path

    def collect(self) -> Iterator[Metric]:
        try:
            status = read_status(self.status_path)
        except StatusError:
            yield _gauge("maltrail_up", "1 while the sensor runs and publishes its status", [], [([], 0)])
            return
        yield from status_metrics(status, time.time())


class MetricsServer:
    """prometheus_client's HTTP server in a thread of the sensor process."""

    def __init__(self, host: str, port: int, status_path: Path) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StatusCollector(status_path))
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
