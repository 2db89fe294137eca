"""Hot reload of the trail index: the supervisor's side (control code, run between batches).

Triggers: the configured trail source changing on disk (its stat, polled about once a second
from the capture loop), SIGHUP, and `Reloader.request(reason)` for code in the sensor process,
such as an update timer that has just published a new index at the configured path. A source
that is not a prebuilt index is rebuilt by `prepare_index` in a separate process, so capture
never stalls.

Protocol: the candidate gets a stable path of its own in the work dir (a hard link, or a copy
across filesystems), so a later rename over the configured path cannot change it. It becomes
generation g+1 once it validates (mapped, arrays checked) and no process still uses g-1: at
most two generations are ever mapped. Publishing is the dispatcher stamping g+1 on every batch
from the next one on; each process switches when it meets the first such batch, so every packet
from that capture position on is matched with the new index, whatever the worker count. A
generation's file is deleted once every process reports a newer one. A failure keeps the
current generation and prints one line to stderr.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from engine.capture import Dispatcher
from engine.config import SensorConfig
from engine.index.fileformat import IndexFormatError, is_index_file, read_meta
from engine.index.generations import generation_path
from engine.index.mapped import TrailIndex
from engine.index.provenance import describe, differences
from shm.counters import SharedCounters

SIGNATURE_SECONDS = 1.0  # how often the source's stat is polled
STEP_SECONDS = 0.05  # how often a build, a pending publish or a file deletion is looked at

Signature = tuple[object, ...]
Prepare = Callable[[SensorConfig, Path], Path]


class TrailSource:
    """The configured trail source, as far as watching it goes."""

    def __init__(self, cfg: SensorConfig) -> None:
        self.path = Path(cfg.trails).expanduser()
        self.prebuilt = is_index_file(self.path) and not cfg.custom_trails
        extra = [] if self.prebuilt else [*cfg.custom_trails, *cfg.whitelist]
        self.paths = [self.path, *(Path(p).expanduser() for p in extra)] if cfg.trails else []

    def signature(self) -> Signature:
        """A file's (inode, mtime_ns, size); a folder's newest mtime and file count. Dot files (an
        editor's or a publisher's file still being written) do not count."""
        out: list[object] = []
        for path in self.paths:
            try:
                st = path.stat()
            except OSError:
                out.append(None)
                continue
            if not stat.S_ISDIR(st.st_mode):
                out.append((st.st_ino, st.st_mtime_ns, st.st_size))
                continue
            newest, count = st.st_mtime_ns, 0
            for root, dirs, files in os.walk(path):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                for name in files:
                    if not name.startswith("."):
                        with contextlib.suppress(OSError):
                            newest = max(newest, os.stat(os.path.join(root, name)).st_mtime_ns)
                            count += 1
            out.append((newest, count))
        return tuple(out)


def stage(src: Path, dest: Path) -> None:
    """`dest` becomes the file `src` names now: a hard link, or a copy across filesystems (one
    open of `src`: a rename over it during the copy does not mix two files)."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def build_candidate(prepare: Prepare | None, cfg: SensorConfig, builddir: str, dest: str, conn: Connection) -> None:
    """The builder process: prepare the index (`None`: the configured file is the index) and stage
    it at `dest`; answers None or the reason it failed."""
    try:
        built = prepare(cfg, Path(builddir)) if prepare is not None else Path(cfg.trails).expanduser()
        stage(built, Path(dest))
        conn.send(None)
    except Exception as exc:  # a failed build is reported, never fatal
        conn.send(_reason(exc))
    finally:
        conn.close()


def validate(path: Path) -> dict[str, Any]:
    """Map the candidate and check its arrays; returns its metadata."""
    index = TrailIndex(path)
    try:
        entries = int(index.meta["counts"]["entries"])
        if len(index) != entries:
            raise IndexFormatError(f"{path.name}: {entries} trails announced, {len(index)} present")
        return index.meta
    finally:
        index.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"not a complete trail index (no {exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")
    return str(exc) or type(exc).__name__


@dataclass
class _Job:
    """A candidate being built or copied in the builder process."""

    proc: BaseProcess
    conn: Connection
    candidate: Path
    builddir: Path
    reason: str


class Reloader:
    """Watches the trail source and switches the running sensor to a new index generation.

    `request(reason)` is the one call for code in the sensor process (SIGHUP's handler, an update
    timer): safe from a signal handler or a thread, it only records the wish; `poll` acts on it
    from the capture loop."""

    def __init__(self, cfg: SensorConfig, source: TrailSource, seen: Signature, workdir: Path, ctx: BaseContext,
                 dispatcher: Dispatcher, in_use: SharedCounters, notes: Connection, prepare: Prepare) -> None:
        self.cfg = cfg
        self.source = source
        self.workdir = workdir
        self.ctx = ctx
        self.dispatcher = dispatcher
        self.in_use = in_use
        self.notes = notes
        self.prepare = prepare
        self.generation = 1
        self.reloads = 0
        self.failures = 0
        self.last_reload_at: float | None = None
        self.last_error: str | None = None
        self._seen = seen  # the signature the current (or coming) generation was made from
        self._unsettled: Signature | None = None  # a change seen once, not yet stable
        self._requested: tuple[str, bool] | None = None
        self._wanted: str | None = None
        self._job: _Job | None = None
        self._candidate: tuple[Path, str] | None = None
        self._files = [1]  # generations whose file still exists
        self._attempt = 0
        self._next_step = 0.0
        self._next_signature = time.monotonic() + SIGNATURE_SECONDS

    def request(self, reason: str, rebuild: bool = False) -> None:
        """Re-check the source now (a prebuilt index reloads if it changed); `rebuild` also
        rebuilds a trails.csv / folder source that has not changed."""
        previous = self._requested
        self._requested = (reason, rebuild or bool(previous and previous[1]))

    def poll(self, now: float) -> None:
        """Called between batches and on an idle link: costs a clock comparison most of the time."""
        if self._requested is None and now < self._next_step:
            return
        self._next_step = now + STEP_SECONDS
        if self._requested is not None or now >= self._next_signature:
            self._next_signature = now + SIGNATURE_SECONDS
            self._watch()
        if self._job is not None:
            self._collect()
        if self._wanted is not None and self._job is None:
            self._start()
        if self._candidate is not None and self._oldest_in_use() >= self.generation:
            self._publish()
        self.dispatcher.catch_up()
        self._delete_unused()

    def close(self) -> None:
        """At the end of the run: stop a build still going (the work dir goes with the sensor)."""
        job, self._job = self._job, None
        if job is not None:
            job.proc.terminate()
            job.proc.join(2.0)
            job.conn.close()

    # ---- steps -------------------------------------------------------------------------------
    def _watch(self) -> None:
        requested, self._requested = self._requested, None
        signature = self.source.signature()
        if requested is not None:
            reason, rebuild = requested
            if signature != self._seen or (rebuild and not self.source.prebuilt):
                self._want(reason, signature)
        elif signature == self._seen:
            self._unsettled = None
        elif self.source.prebuilt or signature == self._unsettled:  # published by rename, or stable for a poll
            self._want("trail source changed", signature)
        else:
            self._unsettled = signature

    def _want(self, reason: str, signature: Signature) -> None:
        self._seen, self._unsettled, self._wanted = signature, None, reason

    def _start(self) -> None:
        reason, self._wanted = self._wanted or "", None
        self._attempt += 1
        candidate = self.workdir / f"candidate-{self._attempt}.mtidx"
        if self.source.prebuilt:
            with contextlib.suppress(OSError):  # the usual case, at once: a hard link
                os.link(self.source.path, candidate)
                if self._applies(candidate):
                    self._offer(candidate, reason)
                    return
                candidate.unlink()  # built with another whitelist: prepare_index rebuilds or refuses
        builddir = self.workdir / f"build-{self._attempt}"
        builddir.mkdir()
        conn, sender = self.ctx.Pipe(duplex=False)
        prepare = self.prepare
        proc = self.ctx.Process(target=build_candidate, name="trail-build", daemon=True,
                                args=(prepare, self.cfg, str(builddir), str(candidate), sender))
        proc.start()
        sender.close()
        self._job = _Job(proc, conn, candidate, builddir, reason)

    def _collect(self) -> None:
        job = self._job
        assert job is not None
        if not job.conn.poll(0):
            if job.proc.is_alive():
                return
            error: str | None = f"the build process stopped (exit code {job.proc.exitcode})"
        else:
            try:
                error = job.conn.recv()
            except EOFError:
                error = "the build process stopped without an answer"
        self._job = None
        job.proc.join(2.0)
        job.conn.close()
        shutil.rmtree(job.builddir, ignore_errors=True)
        if self._wanted is not None:  # the source changed again meanwhile: the next build wins
            job.candidate.unlink(missing_ok=True)
        elif error is not None:
            job.candidate.unlink(missing_ok=True)
            self._fail(error)
        else:
            self._offer(job.candidate, job.reason)

    def _applies(self, candidate: Path) -> bool:
        """Was this index built with the configured whitelist and custom trails?"""
        cfg = self.cfg
        wanted = describe([Path(w) for w in cfg.whitelist], cfg.default_whitelist,
                          [Path(d).expanduser() for d in cfg.custom_trails])
        try:
            return not differences(read_meta(candidate).get("provenance"), wanted)
        except IndexFormatError:
            return False  # the build process reports what is wrong with it

    def _offer(self, candidate: Path, reason: str) -> None:
        if self._candidate is not None:  # superseded before it could be published
            self._candidate[0].unlink(missing_ok=True)
        self._candidate = (candidate, reason)

    def _publish(self) -> None:
        assert self._candidate is not None
        candidate, reason = self._candidate
        self._candidate = None
        try:
            meta = validate(candidate)
        except Exception as exc:  # whatever a bad file raises: keep the current generation
            candidate.unlink(missing_ok=True)
            self._fail(_reason(exc))
            return
        generation = self.generation + 1
        os.replace(candidate, generation_path(self.workdir, generation))
        self.dispatcher.switch(generation)
        self.generation = generation
        self._files.append(generation)
        self.reloads += 1
        self.last_reload_at = time.time()
        self.last_error = None
        self._notify()
        print(f"maltrail: trail index generation {generation} ({int(meta['counts']['entries']):,} trails), "
              f"{reason}", flush=True)

    def _fail(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        self._notify()
        print(f"maltrail: trail reload failed, keeping generation {self.generation}: {error}",
              file=sys.stderr, flush=True)

    def _notify(self) -> None:
        """The reload figures, for the aggregator's status file."""
        self.notes.send({"reloads": self.reloads, "reload_failures": self.failures,
                         "last_reload_at": self.last_reload_at, "last_reload_error": self.last_error})

    def _oldest_in_use(self) -> int:
        return min(self.in_use.as_dict().values())

    def _delete_unused(self) -> None:
        if len(self._files) < 2:
            return
        oldest = self._oldest_in_use()
        for generation in [g for g in self._files if g < oldest]:
            generation_path(self.workdir, generation).unlink(missing_ok=True)
            self._files.remove(generation)
