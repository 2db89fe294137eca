"""Starting, supervising and stopping one sensor run.

The main process is the capture process and the supervisor: it owns every shared-memory
segment, starts the workers and the aggregator, feeds the rings, and checks after every batch
that all its children are alive. A child that dies stops the sensor loudly (a sensor that runs
blind is worse than one that stops). Ctrl-C and SIGTERM stop capturing, drain what is already
in the rings, and print the summary; a second Ctrl-C abandons the drain. Segments are unlinked on
every path out. While capturing it publishes libpcap's kernel counts for the status file,
live (or when asked) prints a one-line report every few seconds, and reloads the trail index
when its source changes, on SIGHUP, or when asked (`engine/reload.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from engine.capture import CAPTURE_FIELDS, Dispatcher, paced, replay
from engine.config import ConfigError, HeuristicSettings, SensorConfig, listen_address
from engine.index.fileformat import is_index_file, read_meta
from engine.index.generations import GenerationSpec, generation_path, generation_roles
from engine.index.provenance import describe, differences
from engine.livestats import CaptureSource, StatusError, index_line, output_lines, read_status, report_line
from engine.outputs import entry as outputs_entry
from engine.outputs.spec import EventSettings
from engine.pcapio import Batch, CaptureError, LiveCapture, file_linktype, read_batches, replay_problem
from engine.processes import process_context, start_process_server
from engine.reload import Reloader, TrailSource, stage
from engine.resources import data_file
from shm.counters import SharedCounters, create_counters
from shm.ring import Ring, create_doorbell, create_ring
from shm.segments import SegmentOwner
from workers import entry
from workers.batch import SUPPORTED_LINKTYPES, linktype_name
from workers.settings import DetectionSettings

if TYPE_CHECKING:
    from engine.metrics import MetricsServer

RESULT_SLOTS = 8
FIRST_BATCH_PACKETS = 1024  # `_file_batches`
RESULT_SLOT_BYTES = 1 << 20
KERNEL_STATS_SECONDS = 0.5  # how often libpcap's counts are published for the status file


class SensorError(Exception):
    """The run cannot go on (a process died, nothing to capture, ...)."""


@dataclass
class Summary:
    """What the sensor prints at exit."""

    status: dict[str, Any]
    wall_seconds: float
    startup_seconds: float
    capture_dropped: int
    kernel: tuple[int, int, int] | None
    interrupted: bool
    captured: int = 0
    offered_pps: float | None = None

    @property
    def packets(self) -> int:
        return int(self.status["counters"].get("packets", 0))

    @property
    def ring_drops(self) -> list[int]:
        return [int(r["dropped_packets"]) for r in self.status["rings"]]

    def lines(self) -> list[str]:
        c = self.status["counters"]
        per_worker = ", ".join(f"w{i}={n}" for i, n in enumerate(self.status["per_worker_packets"]))
        ring_drops = " ".join(f"w{i}={n}" for i, n in enumerate(self.ring_drops))
        pps = self.packets / self.wall_seconds if self.wall_seconds > 0 else 0.0
        out = [
            "summary:" + (" (interrupted)" if self.interrupted else ""),
            f"  packets      {self.packets}",
            f"  captured     {self.captured}"
            + (f" (offered at {self.offered_pps:,.0f} packets/s)" if self.offered_pps else ""),
            f"  bytes        {c.get('bytes', 0)}",
            f"  per worker   {per_worker}",
        ]
        if self.kernel:
            out.append(f"  kernel       received {self.kernel[0]}, dropped {self.kernel[1]}, "
                       f"interface dropped {self.kernel[2]} (libpcap's counts)")
        out += [
            f"  drops        {sum(self.ring_drops)} (ring: {ring_drops})"
            + (f", {self.kernel[1]} (kernel), {self.kernel[2]} (interface)" if self.kernel else ""),
            f"  events       {self.status['events_written']} written, {self.status['events_suppressed']} "
            f"collapsed as duplicates, {self.status['events_whitelisted']} whitelisted, "
            f"{self.status['events_ignored']} ignored",
            *output_lines(self.status),
            f"  malformed    {c.get('malformed', 0)}",
            index_line(self.status.get("index")),
            f"  wall time    {self.wall_seconds:.3f} s (startup {self.startup_seconds:.3f} s)",
            f"  packets/s    {pps:,.0f}",
        ]
        return out


class RunMonitor(Protocol):
    """Hooks for `maltrail bench`: the processes once ready, progress, the end of the drain."""

    def started(self, pids: dict[str, int]) -> None: ...

    def progress(self, captured: int) -> None: ...

    def drained(self) -> None: ...


@dataclass
class Periodic:
    """What the capture loop does every so often, between batches and on an idle link: publish
    libpcap's kernel counts (the aggregator copies them into the status file), check the
    children, let the reloader act, and print the one-line report every `report_seconds` (0: never)."""

    counters: SharedCounters
    supervisor: Supervisor
    status_path: Path
    live: LiveCapture | None = None
    report_seconds: float = 0.0
    reloader: Reloader | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)
    _next_kernel: float = 0.0
    _next_report: float = 0.0
    _previous: dict[str, Any] | None = None
    _kernel: tuple[int, int, int] | None = None

    def start(self) -> None:
        now = time.monotonic()
        self._next_kernel = now
        self._next_report = now + self.report_seconds

    def __call__(self) -> None:
        now = time.monotonic()
        if now >= self._next_kernel:
            self._next_kernel = now + KERNEL_STATS_SECONDS
            self.publish_kernel()
        if self.reloader is not None:
            self.reloader.poll(now)
        if self.report_seconds and now >= self._next_report:
            self._next_report = now + self.report_seconds
            self.report()

    def idle(self) -> None:
        self.supervisor.check()
        self()

    def publish_kernel(self) -> tuple[int, int, int] | None:
        if self.live is None:
            return None
        recv, drop, ifdrop = self._kernel = self.live.stats()
        self.counters.set(kernel_received=recv, kernel_dropped=drop, kernel_ifdropped=ifdrop, kernel_valid=1)
        return recv, drop, ifdrop

    def report(self) -> None:
        try:
            status = read_status(self.status_path)
        except StatusError:  # nothing published yet
            return
        if self._previous is not None and status["updated"] <= self._previous["updated"]:
            return
        capture = status.get("capture")
        if self._kernel is not None and isinstance(capture, dict) and not capture.get("kernel"):
            # the aggregator wrote this status before it saw the first kernel counts: ours are first-hand
            recv, drop, ifdrop = self._kernel
            capture["kernel"] = {"received": recv, "dropped": drop, "interface_dropped": ifdrop}
        print(report_line(self._previous, status), file=self.out, flush=True)
        self._previous = status


def detection_settings(cfg: SensorConfig) -> DetectionSettings:
    muted = set(cfg.disabled_heuristics)
    return DetectionSettings(cfg.use_heuristics, cfg.check_missing_host, cfg.check_host_domains,
                             "long_domain" not in muted, "web_scanning" not in muted)


def event_settings(cfg: SensorConfig) -> EventSettings:
    return EventSettings(tuple(cfg.outputs), tuple(cfg.severity_rules), not cfg.disable_local_log,
                         cfg.ignore_events_regex)


def heuristic_settings(cfg: SensorConfig) -> HeuristicSettings:
    return HeuristicSettings(
        use_heuristics=cfg.use_heuristics, disabled=frozenset(cfg.disabled_heuristics), scan_window=cfg.scan_window,
        port_scan_threshold=cfg.port_scan_threshold, udp_scan_threshold=cfg.udp_scan_threshold,
        web_scan_threshold=cfg.web_scan_threshold, infection_threshold=cfg.infection_threshold,
        dns_exhaustion_threshold=cfg.dns_exhaustion_threshold, nxdomain_threshold=cfg.nxdomain_threshold)


def _build_index(specs: list[str], out: Path, cfg: SensorConfig) -> None:
    """The trail compiler is imported only to build: a prebuilt index starts without it."""
    from engine.index.build import build_index_file

    build_index_file(specs, out, [Path(w) for w in cfg.whitelist], cfg.default_whitelist,
                     disabled_info_regex=cfg.disabled_trails_info_regex)


def prepare_index(cfg: SensorConfig, workdir: Path, say: Callable[[str], None] | None = None) -> Path:
    """The index to map: the configured file itself, or one built now from the sources.

    A prebuilt index is used only if it was built with the configured whitelist and custom trails
    (its recorded provenance); otherwise it is rebuilt from its recorded sources when they are all
    still there (saying so through `say`), or refused with what differs. Never silently ignored."""
    if not cfg.trails:
        raise ConfigError("no trail source: set [sensor] trails in maltrail.toml or pass --trails")
    path = Path(cfg.trails).expanduser()
    if not path.exists():
        raise ConfigError(f"[sensor] trails: {path} does not exist")
    custom = [Path(d).expanduser() for d in cfg.custom_trails]
    for folder in custom:
        if not folder.is_dir():
            raise ConfigError(f"[sensor] custom_trails: {folder} is not a folder")
    whitelist = [Path(w) for w in cfg.whitelist]
    out = workdir / "trails.mtidx"
    if not is_index_file(path):
        specs = [f"custom:{d}" for d in custom] + [str(path)]  # Maltrail's order: custom first
        _build_index(specs, out, cfg)
        return out
    meta = read_meta(path)
    diffs = differences(meta.get("provenance"), describe(whitelist, cfg.default_whitelist, custom))
    recorded = meta.get("disabled_trails_info_regex", "")
    if recorded != cfg.disabled_trails_info_regex:
        diffs.append(f"disabled_trails_info_regex {recorded!r} in the index, {cfg.disabled_trails_info_regex!r} "
                     "configured")
    if not diffs:
        return path
    specs = [str(s) for s in meta.get("sources", [])]
    rebuildable = bool(specs) and "update" not in meta and all(
        Path(s.removeprefix("custom:")).exists() and Path(s.removeprefix("custom:")).is_absolute() for s in specs)
    if not rebuildable:
        how = "maltrail update (it applies [sensor] whitelist and custom_trails)" if "update" in meta else \
            "maltrail trails build with the same whitelist and custom folders"
        raise ConfigError(f"[sensor] trails: {path} was built with other settings ({'; '.join(diffs)}); "
                          f"rebuild it with {how}, or configure the same")
    known = {s for s in specs if s.startswith("custom:")}
    extra = [f"custom:{d.resolve()}" for d in custom if f"custom:{d.resolve()}" not in known]
    ordered = [s for s in specs if s.startswith("custom:")] + extra + [s for s in specs if not s.startswith("custom:")]
    _build_index(ordered, out, cfg)
    if say is not None:
        say(f"{path} was built with other settings ({'; '.join(diffs)}): rebuilt from its sources "
            "with the configured ones for this run")
    return out


def _first_generation(prepared: Path, workdir: Path) -> None:
    """Generation 1 gets its own path in the work dir, as every reloaded one will."""
    if prepared.parent == workdir:
        os.replace(prepared, generation_path(workdir, 1))
    else:
        stage(prepared, generation_path(workdir, 1))


class Supervisor:
    """Watches the child processes; any abnormal exit stops the run."""

    def __init__(self, procs: list[BaseProcess]) -> None:
        self.procs = procs

    def check(self) -> None:
        for p in self.procs:
            code = p.exitcode
            if code is not None and code != 0:
                raise SensorError(f"{p.name} died (exit code {code}): stopping rather than running blind")

    def stop(self, grace: float = 2.0) -> None:
        deadline = time.monotonic() + grace
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:  # children ignore SIGTERM (the sensor decides how they stop): SIGKILL
            if p.is_alive():
                p.kill()
                p.join()


def start_metrics(cfg: SensorConfig, status_path: Path) -> MetricsServer | None:
    """The Prometheus endpoint of `[sensor] metrics` (prometheus_client imported only then)."""
    if not cfg.metrics:
        return None
    from engine.metrics import MetricsServer

    host, port = listen_address(cfg.metrics, "[sensor] metrics")
    try:
        return MetricsServer(host, port, status_path)
    except OSError as exc:
        raise ConfigError(f"[sensor] metrics: cannot listen on {cfg.metrics}: {exc.strerror or exc}") from None


def _linktype_text(linktype: int) -> str:
    name = linktype_name(linktype)
    return f"{linktype} ({name})" if name else str(linktype)


def check_linktype(source: str, linktype: int) -> None:
    """Refuse at start a capture the workers cannot parse, rather than count every packet of it
    as `unsupported_link` and report nothing."""
    if linktype not in SUPPORTED_LINKTYPES:
        supported = ", ".join(_linktype_text(d) for d in SUPPORTED_LINKTYPES)
        raise CaptureError(f"{source}: link type {_linktype_text(linktype)} is not supported; supported: {supported}")


def _file_batches(paths: Iterable[Path], max_packets: int, max_bytes: int) -> Iterator[Batch]:
    """The files' packets in batches of about `max_bytes` at most; the replay's first batch is
    small (`FIRST_BATCH_PACKETS`): a worker waits for the whole first batch to be read before it
    starts (15-20 ms for 8192 copied packets), where everything after it overlaps."""
    first = FIRST_BATCH_PACKETS
    for path in paths:
        yield from read_batches(path, max_packets, first, max_bytes)
        first = 0


def _drain(dispatcher: Dispatcher, receiver: Connection, supervisor: Supervisor, aggregator: BaseProcess
           ) -> dict[str, Any]:
    """End of input: let every worker finish its ring, then take the aggregator's final status."""
    if not dispatcher.finished:
        dispatcher.finish()
    while not receiver.poll(0.2):
        supervisor.check()
        if not aggregator.is_alive() and not receiver.poll(0):
            raise SensorError("aggregator stopped without a summary")
    return receiver.recv()


def _start_ignoring_sigint(procs: list[BaseProcess]) -> None:
    """Children come from the fork server, which ignores SIGINT and passes that on: Ctrl-C goes to
    the whole foreground group, and only the sensor decides how the pipeline stops. This process
    keeps its own handler throughout, so a Ctrl-C during the start is never lost. The aggregator
    (last in `procs`) starts first: it imports its own modules after its fork (`workers.entry`),
    and they then load while the workers map the index instead of after."""
    start_process_server()
    for p in reversed(procs):
        p.start()


def _say(line: str) -> None:
    print(f"maltrail: {line}", file=sys.stderr)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_sensor(cfg: SensorConfig, captures: list[Path], interface: str | None = None, *,
               report_seconds: float | None = None, offered_pps: float | None = None,
               monitor: RunMonitor | None = None, on_reloader: Callable[[Reloader], None] | None = None) -> Summary:
    """Run the full pipeline over capture files (in order) or a live interface.

    `report_seconds` overrides `[sensor] report_seconds` and applies to replays too (which are
    quiet otherwise). `offered_pps` replays the files as a busy link: packets released at that
    rate, and a full ring drops the batch and counts it, as in live capture. `on_reloader` is
    handed the run's `Reloader` once every process is ready (an update timer, tests): a new
    index published at the configured path is then one `reloader.request(reason)` away."""
    if bool(captures) == bool(interface):
        raise ConfigError("give capture files (-r) or an interface (-i / [sensor] interface), not both or none")
    if offered_pps is not None and (interface or offered_pps <= 0):
        raise ConfigError("an offered rate applies to capture files only, and must be > 0 packets/s")
    for path in captures:
        if problem := replay_problem(path):
            raise SensorError(f"{path}: {problem}")
        check_linktype(str(path), file_linktype(path))
    if report_seconds is None:
        report_seconds = cfg.report_seconds if interface else 0
    started = time.monotonic()
    log_dir = Path(cfg.log_dir).expanduser()
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"[sensor] log_dir: cannot create {log_dir}: {exc.strerror}") from None
    status_path = Path(cfg.status_file) if cfg.status_file else log_dir / "sensor-status.json"
    ignore_files = ([str(data_file("ignore_events.txt"))] if cfg.default_ignore else []) + list(cfg.ignore)
    metrics = start_metrics(cfg, status_path)
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    hangups: list[int] = []  # SIGHUP while starting: acted on once the reloader exists
    previous_hup = signal.signal(signal.SIGHUP, lambda signum, frame: hangups.append(signum))
    owner = SegmentOwner()
    procs: list[BaseProcess] = []
    rings: list[Ring] = []
    live: LiveCapture | None = None
    counters: SharedCounters | None = None
    in_use: SharedCounters | None = None
    reloader: Reloader | None = None
    dispatcher: Dispatcher | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="maltrail-") as work:
            source = TrailSource(cfg)
            seen = source.signature()  # before building: a change during the build is not missed
            _first_generation(prepare_index(cfg, Path(work), _say), Path(work))
            ctx = process_context()
            slots = max(2, cfg.ring_slots // cfg.workers)  # a total budget: memory flat in workers
            in_specs = [create_ring(owner, f"in{w}", slots, cfg.ring_slot_kb * 1024) for w in range(cfg.workers)]
            results = create_doorbell()  # the aggregator waits on it for any worker's results
            out_specs = [create_ring(owner, f"out{w}", RESULT_SLOTS, RESULT_SLOT_BYTES, results)
                         for w in range(cfg.workers)]
            capture_source = CaptureSource(create_counters(owner, "capture", CAPTURE_FIELDS), interface,
                                           tuple(str(p) for p in captures))
            counters = SharedCounters(capture_source.counters)
            counters.set(offered_pps=int(offered_pps or 0))
            generations = GenerationSpec(work, create_counters(owner, "generations", generation_roles(cfg.workers)))
            in_use = SharedCounters(generations.counters)
            receiver, sender = ctx.Pipe(duplex=False)
            notes_in, notes_out = ctx.Pipe(duplex=False)
            ready = ctx.Semaphore(0)
            me = os.getpid()
            for w in range(cfg.workers):
                procs.append(ctx.Process(target=entry.worker, name=f"worker-{w}",
                                         args=(w, generations, in_specs[w], out_specs[w], me, ready,
                                               detection_settings(cfg))))
            events = event_settings(cfg)
            if cfg.outputs:  # encoding and sending in a process of their own (engine/outputs/process.py)
                feed = create_ring(owner, "outputs", outputs_entry.FEED_SLOTS, outputs_entry.FEED_SLOT_BYTES)
                stats_in, stats_out = ctx.Pipe(duplex=False)
                procs.append(ctx.Process(target=outputs_entry.outputs, name="outputs",
                                         args=(feed, events, cfg.sensor_name, stats_out, me, ready)))
                events = dataclasses.replace(events, feed=feed, stats=stats_in)
            procs.append(ctx.Process(target=entry.aggregator, name="aggregator", args=(
                generations, out_specs, in_specs, str(log_dir), cfg.sensor_name, ignore_files,
                str(status_path), me, sender, notes_in, ready, heuristic_settings(cfg), capture_source,
                detection_settings(cfg), events)))
            if interface:  # opened before the children start: a capture error is reported at once, and
                # nothing they publish (the status file) precedes the open capture, now that they start quickly
                live = LiveCapture(interface, bpf=cfg.bpf, snaplen=cfg.snaplen, promisc=cfg.promisc,
                                   buffer_size=cfg.capture_buffer_mb << 20)
                check_linktype(interface, live.linktype)
            _start_ignoring_sigint(procs)
            supervisor = Supervisor(procs)
            rings = [Ring(s) for s in in_specs]
            drop_when_full = interface is not None or offered_pps is not None
            dispatcher = Dispatcher(rings, live=drop_when_full, idle=supervisor.check, counters=counters)
            reloader = Reloader(cfg, source, seen, Path(work), ctx, dispatcher, in_use, notes_out, prepare_index)
            signal.signal(signal.SIGHUP, lambda signum, frame: reloader.request("SIGHUP", rebuild=True))
            if hangups:
                reloader.request("SIGHUP", rebuild=True)
            periodic = Periodic(counters, supervisor, status_path, live, report_seconds, reloader)
            capture_started = time.monotonic()
            interrupted = False
            try:  # from here on, Ctrl-C means: stop capturing, drain, summarise
                for _ in procs:  # every process has mapped the index and attached its rings
                    while not ready.acquire(timeout=0.2):
                        supervisor.check()
                capture_started = time.monotonic()
                if on_reloader is not None:
                    on_reloader(reloader)
                periodic.start()
                if monitor is not None:
                    monitor.started({p.name: p.pid for p in procs if p.pid is not None})
                def after_batch() -> None:
                    supervisor.check()
                    periodic()
                    if monitor is not None:
                        monitor.progress(dispatcher.packets)

                if live or offered_pps:
                    batches = (live.batches(cfg.batch_packets, periodic.idle, dispatcher.read_bytes) if live else
                               paced(_file_batches(captures, cfg.batch_packets, dispatcher.read_bytes), offered_pps,
                                     cfg.batch_packets))
                    for batch in batches:
                        dispatcher.send(batch.linktype, batch.meta, batch.wirelen, batch.data)
                        after_batch()
                else:
                    replay(dispatcher, captures, cfg.batch_packets, FIRST_BATCH_PACKETS, after_batch)
            except KeyboardInterrupt:
                interrupted = True
            kernel = periodic.publish_kernel()  # final figures, before the aggregator's final status
            try:
                status = _drain(dispatcher, receiver, supervisor, procs[-1])
            except KeyboardInterrupt:  # a first Ctrl-C while draining: keep draining
                interrupted = True
                status = _drain(dispatcher, receiver, supervisor, procs[-1])
            wall = time.monotonic() - capture_started
            if monitor is not None:
                monitor.drained()
            supervisor.stop()
            return Summary(status, wall, capture_started - started, dispatcher.dropped, kernel, interrupted,
                           dispatcher.packets, offered_pps)
    finally:
        if metrics is not None:
            metrics.close()
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGHUP, previous_hup)
        if reloader is not None:
            reloader.close()
        if live is not None:
            live.close()
        for shared in (counters, in_use):
            if shared is not None:
                shared.close()
        for ring in rings:
            ring.close()
        for p in procs:  # still running only on a failure: they ignore SIGTERM, so SIGKILL
            with contextlib.suppress(Exception):
                if p.is_alive():
                    p.kill()
                p.join(2.0)
        if dispatcher is not None:  # after the workers: none maps a replayed file any more
            dispatcher.close_files()
        owner.unlink_all()
