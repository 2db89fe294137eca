"""`maltrail update`: fetch every source, merge with Maltrail's precedence, install the index fail-closed.

Sources, in Maltrail's merge order (later ones may override earlier ones): the feeds (sorted by
name), the custom folders, the static trails, the custom URLs. Each fetched source is fetched
politely (conditional requests, so an unchanged feed costs a 304), parsed, screened
(``engine.update.sanity``) and checked: a source that fails, comes back empty or shrinks below
``min_ratio`` of its last good rows keeps its last good content, and ``--status`` says so. The new
index is compiled in memory, checked (not empty, not below ``min_ratio`` of the installed one unless
forced) and only then written beside the old one and renamed over it. When no input changed, the
installed index is left alone, so running sensors have nothing to reload.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.config import ConfigError, SensorConfig, UpdateConfig
from engine.index.build import compile_index
from engine.index.fileformat import IndexFormatError, is_index_file, read_meta, write_arrays
from engine.index.provenance import describe, folder_digest
from engine.resources import data_file
from engine.trails.sources import (
    CUSTOM_SPEC_PREFIX,
    MergeRules,
    SourceRows,
    Trails,
    TrailSourceError,
    load_sources,
    read_list_text,
    read_source,
    read_static_texts,
    wildcard_trails,
)
from engine.trails.whitelist import Whitelist
from engine.update.bundle import import_bundle, write_bundle
from engine.update.errors import UpdateError
from engine.update.feeds import FeedError, FeedSpec, collect, load_feeds
from engine.update.fetch import Fetcher, FetchError, archive_members
from engine.update.sanity import drop_in_ranges, drop_ranges, screen
from engine.update.state import SourceRecord, UpdateState, UrlEntry, load_state, save_state, url_key

DEFAULT_INDEX = Path("/var/lib/maltrail/trails.mtidx")
CUSTOM_URL_INFO = "blacklisted"
CUSTOM_URL_REFERENCE = "(remote custom)"
STATIC_MARKER = "trails/static/"
_CIDR4 = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3})/(\d{1,2})\b")
_MIN_EXPANDED_PREFIX = 22  # Maltrail expands custom-URL CIDRs of /22 or narrower into addresses


@dataclass
class UpdateOptions:
    out: Path
    offline: bool = False
    only: list[str] | None = None
    force: bool = False
    bundle: Path | None = None
    from_bundle: Path | None = None


@dataclass
class UpdateReport:
    out: Path
    installed: bool
    entries: int
    previous: int
    seconds: float
    state: UpdateState
    cache: Path
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        what = "installed" if self.installed else "unchanged"
        failing = [r.name for r in self.state.sources.values() if r.error and not r.disabled]
        tail = f"; failing, last good rows kept: {', '.join(failing)}" if failing else ""
        return (f"{self.out}: {what}, {self.entries} trails (was {self.previous}) "
                f"in {self.seconds:.1f} s{tail}")


def index_path(cfg: SensorConfig, out: str | None) -> Path:
    """Where the update writes: --out, else [sensor] trails, else /var/lib/maltrail/trails.mtidx."""
    if out:
        return Path(out).expanduser()
    if not cfg.trails:
        return DEFAULT_INDEX
    path = Path(cfg.trails).expanduser()
    if path.exists() and not is_index_file(path):
        raise ConfigError(f"[sensor] trails: {path} is a trail source, not an index; give --out INDEX "
                          "(and point [sensor] trails at it)")
    return path


def cache_dir(ucfg: UpdateConfig, index: Path) -> Path:
    return Path(ucfg.cache_dir).expanduser() if ucfg.cache_dir else index.with_name(index.name + ".d")


def select_feeds(ucfg: UpdateConfig, feeds: dict[str, FeedSpec]) -> tuple[list[str], list[str]]:
    """(enabled, disabled) feed names; an unknown name in the configuration is refused."""
    for key in ("feeds", "disabled_feeds"):
        unknown = [n for n in getattr(ucfg, key) if n not in feeds]
        if unknown:
            raise ConfigError(f"[update] {key}: unknown feed {unknown[0]!r} (see engine/data/feeds.toml)")
    chosen = set(ucfg.feeds) if ucfg.feeds else {n for n, f in feeds.items() if f.enabled}
    chosen -= set(ucfg.disabled_feeds)
    if ucfg.disabled_info_regex:  # Maltrail skips a module whose info matches
        pattern = re.compile(ucfg.disabled_info_regex)
        chosen = {n for n in chosen if not pattern.search(feeds[n].info or "")}
    return sorted(chosen), sorted(set(feeds) - chosen)


def disabled_info_pattern(update_regex: str, sensor_regex: str) -> re.Pattern[str] | None:
    """[update] disabled_info_regex (as written) and [sensor] disabled_trails_info_regex
    (case-insensitive), either matching."""
    parts = ([f"(?:{update_regex})"] if update_regex else []) + ([f"(?i:{sensor_regex})"] if sensor_regex else [])
    return re.compile("|".join(parts)) if parts else None


def mirror_url(url: str, base: str) -> str:
    """`url` as served by a mirror laid out as BASE/HOST/PATH?QUERY (templates keep their placeholders)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        return url
    return f"{base.rstrip('/')}/{rest}"


def mirrored(spec: FeedSpec, base: str) -> FeedSpec:
    return replace(spec, urls=tuple(mirror_url(u, base) for u in spec.urls),
                   fallback=mirror_url(spec.fallback, base) if spec.fallback else spec.fallback,
                   follow_url=mirror_url(spec.follow_url, base) if spec.follow_url else spec.follow_url)


def custom_url(text: str) -> str:
    """Maltrail adds ``http://`` to a custom URL written without a scheme."""
    return text if "//" in text else f"http://{text}"


class BodyCache:
    """Last good bodies per URL on disk, and conditional fetching in front of them.

    A fetched body stays pending until its source is accepted (``commit``): a body that failed a
    sanity test never replaces the last good one."""

    def __init__(self, root: Path, state: UpdateState, fetcher: Fetcher | None) -> None:
        self.root = root
        self.state = state
        self.fetcher = fetcher
        self.pending: dict[str, tuple[bytes, str | None, str | None]] = {}
        self.status: dict[str, int] = {}
        root.mkdir(parents=True, exist_ok=True)

    def cached(self, url: str) -> bytes | None:
        path = self.root / url_key(url)
        return path.read_bytes() if url in self.state.urls and path.is_file() else None

    def get(self, url: str, online: bool = True, unpack: bool = True) -> bytes:
        """The body for `url`: fetched (a 304 gives the cached one), or the cached one offline.
        `unpack=False` keeps an archive as it came (the static trails)."""
        cached = self.cached(url)
        if self.fetcher is None or not online:
            if cached is None:
                raise FetchError(f"{url}: no copy fetched yet (offline)")
            return cached
        entry = self.state.urls.get(url) if cached is not None else None
        result = self.fetcher.get(url, entry.etag if entry else None, entry.last_modified if entry else None,
                                  unpack=unpack)
        self.status[url] = result.status
        if result.body is None:  # 304 Not Modified
            assert cached is not None
            return cached
        self.pending[url] = (result.body, result.etag, result.last_modified)
        return result.body

    def commit(self, urls: list[str]) -> None:
        for url in urls:
            if url not in self.pending:
                continue
            body, etag, last_modified = self.pending.pop(url)
            path = self.root / url_key(url)
            tmp = path.with_suffix(".new")
            tmp.write_bytes(body)
            tmp.replace(path)
            entry = self.state.urls.setdefault(url, UrlEntry())
            entry.etag, entry.last_modified = etag, last_modified
            entry.sha256, entry.size, entry.fetched = hashlib.sha256(body).hexdigest(), len(body), time.time()

    def drop(self, urls: list[str]) -> None:
        for url in urls:
            self.pending.pop(url, None)

    def digest(self, urls: list[str]) -> str:
        return hashlib.sha256("".join(self.state.urls[u].sha256 for u in urls if u in self.state.urls).encode()
                              ).hexdigest()


@dataclass
class _Run:
    """One update's working set."""

    cfg: SensorConfig
    ucfg: UpdateConfig
    options: UpdateOptions
    state: UpdateState
    bodies: BodyCache
    whitelist: Whitelist
    root: Path
    now: float = field(default_factory=time.time)
    inputs: list[tuple[str, str]] = field(default_factory=list)  # (source, content digest)
    used_urls: list[str] = field(default_factory=list)
    bundle_time: float | None = None  # building from a bundle: when its content was fetched

    def online(self, name: str) -> bool:
        return not self.options.offline and (self.options.only is None or name in self.options.only)

    def fetched(self, name: str, kind: str, urls: list[str], fetch: Callable[[bool], tuple[Trails, list[str]]]
                ) -> Trails | None:
        """Run one fetched source with the fail-closed rules; its rows, or None when it has none."""
        rec = self.state.record(name, kind)
        rec.urls, rec.disabled = urls, False
        online = self.online(name)
        if online:
            rec.last_attempt = self.now
        try:
            rows, got = fetch(online)
            screened = screen(rows, self.whitelist)
            if not screened.rows:
                raise FeedError("no rows (empty body or nothing the parser accepts)")
            if online and rec.good_rows and len(screened.rows) < self.ucfg.min_ratio * rec.good_rows:
                raise FeedError(f"shrunk from {rec.good_rows} to {len(screened.rows)} rows "
                                f"(under min_ratio {self.ucfg.min_ratio})")
        except (FetchError, FeedError, OSError, ValueError) as exc:
            self.bodies.drop(urls)
            rec.http_status = _status_of(exc, self.bodies.status, urls)
            if online:
                rec.error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            last = self._last_good(fetch)
            if last is None:
                rec.rows = 0
                return None
            screened, got = last
        else:
            self.bodies.commit(got)
            if online:
                rec.error, rec.last_success = "", self.now
                rec.http_status = max((self.bodies.status.get(u, 0) for u in got), default=0) or None
            elif self.bundle_time:
                rec.error, rec.last_success = "", self.bundle_time
            rec.good_rows = len(screened.rows)
        rec.rows, rec.whitelisted, rec.dropped = len(screened.rows), screened.whitelisted, (
            screened.bogon_cdn + screened.public_suffix)
        self.used_urls += got
        self.inputs.append((name, self.bodies.digest(got)))
        return screened.rows

    def _last_good(self, fetch: Callable[[bool], tuple[Trails, list[str]]]) -> Any:
        try:
            rows, got = fetch(False)
        except (FetchError, FeedError, OSError, ValueError):
            return None
        screened = screen(rows, self.whitelist)
        return (screened, got) if screened.rows else None


def _status_of(exc: Exception, seen: dict[str, int], urls: list[str]) -> int | None:
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status:
        return status
    return next((seen[u] for u in urls if u in seen), None)


def _feed(run: _Run, spec: FeedSpec) -> Trails | None:
    def fetch(online: bool) -> tuple[Trails, list[str]]:
        got: list[str] = []

        def get(url: str) -> str:
            body = run.bodies.get(url, online)
            got.append(url)
            return body.decode("utf-8", "replace")

        return collect(spec, get), got

    return run.fetched(spec.name, "feed", list(spec.urls), fetch)


def expand_cidrs(text: str) -> list[str]:
    """Addresses of every IPv4 CIDR of /22 or narrower in a custom list's text (comments included)."""
    out = []
    for match in _CIDR4.finditer(text):
        octets = [int(o) for o in match.group(1).split(".")]
        bits = int(match.group(2))
        if max(octets) > 255 or not _MIN_EXPANDED_PREFIX <= bits <= 32:
            continue
        base = int.from_bytes(bytes(octets), "big") & ~((1 << (32 - bits)) - 1) & 0xFFFFFFFF
        out += [".".join(str(b) for b in (base + i).to_bytes(4, "big")) for i in range(1 << (32 - bits))]
    return out


def _custom_url(run: _Run, url: str) -> Trails | None:
    def fetch(online: bool) -> tuple[Trails, list[str]]:
        text = run.bodies.get(url, online).decode("utf-8", "replace")
        rows = read_list_text(text, CUSTOM_URL_INFO, CUSTOM_URL_REFERENCE).settle({})
        for address in expand_cidrs(text):
            rows.setdefault(address, (CUSTOM_URL_INFO, CUSTOM_URL_REFERENCE))
        return rows, [url]

    return run.fetched(f"url:{url}", "url", [url], fetch)


def _static_members(data: bytes, limit: int) -> dict[str, bytes]:
    """Trail files of an archive holding Maltrail's ``trails/static`` (or a bare ``static/``), by path
    below that folder."""
    members = [(name, body) for name, body in archive_members(data, max_bytes=limit)
               if name.endswith((".txt", ".csv"))]
    for marker in (STATIC_MARKER, "static/"):
        found = {name.split(marker, 1)[1]: body for name, body in members if marker in name}
        if found:
            return found
    raise FeedError(f"the archive holds no {STATIC_MARKER} folder")


def _static(run: _Run, url: str) -> SourceRows | Callable[[], SourceRows] | None:
    """Maltrail's static trails, from a local folder or an archive URL (read in memory from the
    archive, which the cache keeps as its last good body).

    Unchanged since the installed index, they are returned unread (a loader): reading 1.6 M lines
    is most of an update's time, and an update where nothing changed needs none of it."""
    rec = run.state.record("static", "static")
    rec.urls, rec.disabled = [url], False
    local = Path(url[len("file://"):] if url.startswith("file://") else url).expanduser()
    online = run.online("static")
    if online:
        rec.last_attempt = run.now
    if "://" not in url or local.is_dir():
        if not local.is_dir():
            raise UpdateError(f"[update] static_url: {local} is not a folder or an archive URL")
        digest = folder_digest(local, content=False)

        def load() -> SourceRows:
            return read_source(str(local))
    else:
        try:
            data = run.bodies.get(url, online, unpack=False)
        except (FetchError, OSError) as exc:
            rec.http_status = _status_of(exc, run.bodies.status, [url])
            if online:
                rec.error, online = str(exc).splitlines()[0][:300], False
            data = run.bodies.cached(url)
            if data is None:
                rec.rows = 0
                return None
        digest = hashlib.sha256(data).hexdigest()

        def load() -> SourceRows:
            return read_static_texts(_static_members(data, run.ucfg.max_bytes), url)
    run.inputs.append(("static", digest))
    if digest == rec.digest and rec.rows:
        _static_ok(run, rec, url, online, rec.rows)
        return load  # read only if another source changed
    try:
        source = load()
    except (FetchError, FeedError, TrailSourceError) as exc:  # a corrupt archive: the last good one stands in
        run.bodies.drop([url])
        if online:
            rec.error = str(exc).splitlines()[0][:300]
        cached = run.bodies.cached(url)
        if cached is None or "://" not in url:
            rec.rows = 0
            run.inputs.pop()
            return None
        run.inputs[-1] = ("static", hashlib.sha256(cached).hexdigest())
        source = read_static_texts(_static_members(cached, run.ucfg.max_bytes), url)
        online = False
    rows = len(source.trails)
    if online and rec.good_rows and rows < run.ucfg.min_ratio * rec.good_rows and not run.options.force:
        run.bodies.drop([url])
        rec.error = f"shrunk from {rec.good_rows} to {rows} rows (under min_ratio {run.ucfg.min_ratio})"
        raise UpdateError(f"static trails: {rec.error}; keeping the installed index (--force installs it)")
    run.bodies.commit([url])
    _static_ok(run, rec, url, online, rows)
    rec.whitelisted = len(source.trails.keys() & run.whitelist.exact)
    return source


def _static_ok(run: _Run, rec: SourceRecord, url: str, online: bool, rows: int) -> None:
    """Bookkeeping of static trails that are in use (fetched now, from the cache or a bundle)."""
    if online:
        rec.error, rec.last_success = "", run.now
        rec.http_status = run.bodies.status.get(url) or None
        rec.good_rows = rows
    elif run.bundle_time:
        rec.error, rec.last_success, rec.good_rows = "", run.bundle_time, rows
    rec.rows = rows
    if url in run.state.urls:
        run.used_urls.append(url)


def _custom_dirs(run: _Run) -> list[SourceRows]:
    out = []
    for folder in run.cfg.custom_trails:
        name = f"custom:{folder}"
        rec = run.state.record(name, "custom")
        rec.urls, rec.last_attempt = [str(folder)], run.now
        try:
            source = read_source(CUSTOM_SPEC_PREFIX + str(Path(folder).expanduser()))
        except TrailSourceError as exc:
            rec.error = str(exc)
            raise UpdateError(f"[sensor] custom_trails: {exc}") from None
        rec.error, rec.last_success = "", run.now
        rec.rows = rec.good_rows = len(source.trails)
        rec.whitelisted = len(source.trails.keys() & run.whitelist.exact)
        run.inputs.append((name, folder_digest(Path(folder).expanduser())))
        out.append(source)
    return out


def _whitelist_files(cfg: SensorConfig) -> list[Path]:
    return ([data_file("whitelist.txt")] if cfg.default_whitelist else []) + [Path(w) for w in cfg.whitelist]


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpdateError(f"another update is running (lock {root / 'lock'})") from None
        yield


def installed(out: Path) -> tuple[int, str]:
    """Trail count of the index at `out` and the inputs digest it was built from (0, "": none)."""
    try:
        meta = read_meta(out) if out.is_file() else {}
        return int(meta.get("counts", {}).get("entries", 0)), str(meta.get("update", {}).get("inputs", ""))
    except (IndexFormatError, OSError, ValueError, AttributeError):
        return 0, ""


def run_update(cfg: SensorConfig, ucfg: UpdateConfig, options: UpdateOptions, *,
               feeds: dict[str, FeedSpec] | None = None, fetcher: Fetcher | None = None) -> UpdateReport:
    """One update; raises UpdateError (index untouched) or returns what was done."""
    started = time.perf_counter()
    feeds = load_feeds() if feeds is None else feeds
    out = options.out
    root = cache_dir(ucfg, out)
    with _locked(root), tempfile.TemporaryDirectory(prefix="maltrail-bundle-") as work:
        state = load_state(root / "state.json")
        if options.from_bundle is not None:
            manifest = import_bundle(options.from_bundle, root / "bodies", state, Path(work))
            chosen = [n for n in manifest.get("feeds", []) if n in feeds]
            ucfg = replace(ucfg, static_url=manifest.get("static_url", ""), feeds=chosen,
                           disabled_feeds=[n for n in feeds if n not in chosen], mirror=manifest.get("mirror", ""),
                           custom_urls=list(manifest.get("custom_urls", [])))
            options = replace(options, offline=True)
        configured = {"static_url": ucfg.static_url, "mirror": ucfg.mirror, "custom_urls": ucfg.custom_urls}
        if ucfg.mirror:
            feeds = {name: mirrored(spec, ucfg.mirror) for name, spec in feeds.items()}
            ucfg = replace(ucfg, static_url=mirror_url(ucfg.static_url, ucfg.mirror))
        enabled, disabled = select_feeds(ucfg, feeds)
        if options.only is not None:
            known = set(feeds) | {"static"} | {f"url:{custom_url(u)}" for u in ucfg.custom_urls}
            unknown = [n for n in options.only if n not in known]
            if unknown:
                raise ConfigError(f"--only: unknown source {unknown[0]!r} (feed names, static, url:URL)")
        if fetcher is None and not options.offline:
            fetcher = Fetcher(timeout=ucfg.timeout, max_bytes=ucfg.max_bytes, proxy=ucfg.proxy or None,
                              retries=ucfg.retries)
        whitelist = Whitelist.from_files(_whitelist_files(cfg))
        bodies = BodyCache(root / "bodies", state, None if options.offline else fetcher)
        run = _Run(cfg, ucfg, options, state, bodies, whitelist, root)
        if options.from_bundle is not None:
            run.bundle_time = float(manifest.get("created") or time.time())
        try:
            report = _build(run, feeds, enabled, disabled)
        finally:
            save_state(root / "state.json", state)
        report.seconds = time.perf_counter() - started
        if options.bundle is not None:
            local = Path(ucfg.static_url).expanduser() if ucfg.static_url and "://" not in ucfg.static_url else None
            manifest = {**configured, "feeds": enabled, "urls": run.used_urls, "created": run.now}
            write_bundle(options.bundle, root / "bodies", state, manifest, out, local)
        return report


def _build(run: _Run, feeds: dict[str, FeedSpec], enabled: list[str], disabled: list[str]) -> UpdateReport:
    for name in disabled:
        rec = run.state.record(name, "feed")
        rec.disabled, rec.urls = True, list(feeds[name].urls)
    specs: list[Trails | SourceRows | Callable[[], SourceRows]] = []
    for name in enabled:
        rows = _feed(run, feeds[name])
        if rows:
            specs.append(rows)
    specs += _custom_dirs(run)
    if run.ucfg.static_url:
        static = _static(run, run.ucfg.static_url)
        if static is not None:
            specs.append(static)
    for url in map(custom_url, run.ucfg.custom_urls):
        rows = _custom_url(run, url)
        if rows:
            specs.append(rows)
    keep = {"static"} | {f"custom:{d}" for d in run.cfg.custom_trails} | set(feeds) | {
        f"url:{custom_url(u)}" for u in run.ucfg.custom_urls}
    for name in [n for n in run.state.sources if n not in keep]:
        del run.state.sources[name]

    out = run.options.out
    previous, built_from = installed(out)
    provenance = describe([Path(w) for w in run.cfg.whitelist], run.cfg.default_whitelist,
                          [Path(d).expanduser() for d in run.cfg.custom_trails])
    settings = {"ip_minimum_feeds": run.ucfg.ip_minimum_feeds, "disabled_info_regex": run.ucfg.disabled_info_regex,
                "provenance": provenance, "disabled_trails_info_regex": run.cfg.disabled_trails_info_regex}
    inputs = hashlib.sha256(json.dumps([settings, sorted(run.inputs)], sort_keys=True).encode()).hexdigest()
    report = UpdateReport(out, False, previous, previous, 0.0, run.state, run.root)
    if inputs == built_from and not run.options.force:  # the installed index is this build's already
        return report
    specs = [spec() if callable(spec) else spec for spec in specs]
    rules = MergeRules(run.ucfg.ip_minimum_feeds, disabled_info_pattern(run.ucfg.disabled_info_regex,
                                                                        run.cfg.disabled_trails_info_regex))
    trails = load_sources(specs, run.whitelist, rules)
    drop_in_ranges(trails, drop_ranges())
    if not trails:
        raise UpdateError(f"the sources gave no trails; keeping {out}" if previous else
                          "the sources gave no trails; no index written")
    if previous and len(trails) < run.ucfg.min_ratio * previous and not run.options.force:
        raise UpdateError(f"the new index would hold {len(trails)} trails, under min_ratio {run.ucfg.min_ratio} "
                          f"of the installed {previous}; keeping it (--force installs it)")
    arrays, meta = compile_index(trails, run.whitelist.exact, run.whitelist.ranges4, wildcard_trails(trails),
                                 sources=sorted(name for name, _ in run.inputs))
    meta["provenance"] = provenance
    meta["disabled_trails_info_regex"] = run.cfg.disabled_trails_info_regex
    meta["update"] = {"inputs": inputs, "sources": dict(run.inputs), "cache": str(run.root)}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_arrays(out, arrays, meta)
    for name, digest in run.inputs:
        run.state.sources[name].digest = digest
    report.installed, report.entries = True, len(trails)
    return report
