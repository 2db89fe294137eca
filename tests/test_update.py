"""`maltrail update` end to end: a real HTTP upstream on 127.0.0.1, the CLI, the installed index.

Every feed is served in its real format (tests/fixtures/feeds) with the static archive, through the
`[update] mirror` option. Failures of every kind must keep the last good index and show in
`--status`; a second run gets 304s and leaves the index alone; a bundle rebuilds the same index.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
from httpfixture import FixtureServer
from update_support import STATIC_FILES, STATIC_PATH, Upstream, feed_bodies, mirror_path, static_archive

from engine.cli import main
from engine.index.fileformat import map_arrays, read_meta
from engine.index.mapped import TrailIndex
from engine.update.feeds import collect, load_feeds

FEEDS = load_feeds()
ENABLED = sorted(name for name, spec in FEEDS.items() if spec.enabled)


@pytest.fixture()
def upstream() -> Upstream:
    with FixtureServer() as server:
        yield Upstream(server)


def _update(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["update", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _status(capsys: pytest.CaptureFixture[str], config: Path, out: Path) -> tuple[int, dict[str, dict]]:
    code, text, _ = _update(capsys, "-c", str(config), "--out", str(out), "--status", "--json")
    return code, {row["name"]: row for row in json.loads(text)["sources"]}


def _feed_rows(name: str) -> dict[str, tuple[str, str]]:
    """What the feed's fixture parses to (the parsers' own tests pin these rows exactly)."""
    bodies = feed_bodies(FEEDS[name])
    return collect(FEEDS[name], lambda url: bodies[mirror_path(url)].decode())


def _snapshot(path: Path) -> tuple[int, int, bytes]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, path.read_bytes()


def test_full_update_installs_static_and_every_feed(upstream: Upstream, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = upstream.config(tmp_path / "maltrail.toml", ip_minimum_feeds=1)
    out = tmp_path / "trails.mtidx"
    code, text, err = _update(capsys, "-c", str(config), "--out", str(out), "--json")
    assert code == 0, err
    result = json.loads(text)
    assert result["installed"] and result["trails"] > 100
    code, rows = _status(capsys, config, out)
    assert code == 0
    assert {n for n, r in rows.items() if r["state"] == "ok"} == set(ENABLED) | {"static"}
    assert {n for n, r in rows.items() if r["state"] == "disabled"} == {
        "alienvault", "ciarmy", "myip", "policeman", "turris"}
    assert all(rows[n]["http_status"] == 200 and rows[n]["rows"] > 0 for n in ENABLED)
    index = TrailIndex(out)
    for trail in ("evilbot-c2.example", "evilbot-panel.example", "zeus-gate.example/gate.php",
                  "185.100.87.202:8080", "45.155.205.233"):
        assert index.check(trail).found, trail
    for name in ENABLED:  # every enabled feed contributes trails to the installed index
        found = [t for t in _feed_rows(name) if index.check(t).found]
        assert found, name
    assert not any(upstream.server.count(p) for n in ("alienvault", "turris") for p in upstream.paths[n])
    sent = {r.headers.get("user-agent") for r in upstream.server.requests}
    assert len(sent) == 1 and sent.pop().startswith("maltrail-ng/")


def test_second_update_gets_304s_and_changes_nothing(upstream: Upstream, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = upstream.config(tmp_path / "maltrail.toml")
    out = tmp_path / "trails.mtidx"
    assert _update(capsys, "-c", str(config), "--out", str(out))[0] == 0
    before = _snapshot(out)
    first = len(upstream.server.requests)
    code, text, _ = _update(capsys, "-c", str(config), "--out", str(out))
    assert code == 0 and "unchanged" in text
    again = upstream.server.requests[first:]
    assert again and all("if-none-match" in r.headers for r in again)
    assert _snapshot(out) == before
    code, rows = _status(capsys, config, out)
    assert code == 0 and {r["http_status"] for n, r in rows.items() if r["state"] == "ok"} == {304}


def _garbage_gzip() -> bytes:
    return gzip.compress(b"203.0.113.50\n" * 400)[:-30]


FAILURES = {
    "timeout": ({"delay": 3.0}, "timed out"),
    "http 500": ({"fail_times": 100}, "HTTP 500"),
    "empty body": ({"body": b""}, "no rows"),
    "truncated gzip": ({"body": _garbage_gzip(), "headers": {"Content-Encoding": "gzip"}}, "gzip"),
    "over the size cap": ({"body": b"198.51.100.7\n" * 3000}, "over"),
    "shrunk by 90%": ({"body": b"91.92.93.1\n"}, "shrunk"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failing_feed_keeps_last_good_index(case: str, upstream: Upstream, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """One feed fails in each way: the index stays as it was, the feed's rows stay, --status says why."""
    path = upstream.paths["blocklist"][0]
    good = "".join(f"91.92.93.{i}\n" for i in range(1, 21)).encode()
    upstream.serve(path, good)
    config = upstream.config(tmp_path / "maltrail.toml", ip_minimum_feeds=1, timeout=1, max_bytes=16384)
    out = tmp_path / "trails.mtidx"
    assert _update(capsys, "-c", str(config), "--out", str(out))[0] == 0
    before = _snapshot(out)
    change, reason = FAILURES[case]
    change = dict(change)
    upstream.serve(path, change.pop("body", good), etag='"changed"', **change)
    code, text, err = _update(capsys, "-c", str(config), "--out", str(out))
    assert code == 0, err
    assert "failing, last good rows kept: blocklist" in text
    assert _snapshot(out) == before
    assert TrailIndex(out).check("91.92.93.20").found
    code, rows = _status(capsys, config, out)
    assert code == 1
    assert rows["blocklist"]["state"] == "failing" and reason in rows["blocklist"]["error"]
    assert rows["blocklist"]["rows"] == 20
    assert all(r["state"] in ("ok", "disabled") for n, r in rows.items() if n != "blocklist")


def test_failed_static_archive_keeps_its_last_good_trails(upstream: Upstream, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = upstream.config(tmp_path / "maltrail.toml")
    out = tmp_path / "trails.mtidx"
    assert _update(capsys, "-c", str(config), "--out", str(out))[0] == 0
    upstream.serve(STATIC_PATH, static_archive(STATIC_FILES)[:200], etag='"cut"')
    code, text, _ = _update(capsys, "-c", str(config), "--out", str(out))
    assert code == 0 and "static" in text
    assert TrailIndex(out).check("evilbot-c2.example").found
    assert _status(capsys, config, out)[1]["static"]["state"] == "failing"


def test_shrunk_index_is_refused_unless_forced(upstream: Upstream, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    big = {"malware/many.txt": "".join(f"host{i}.bad.example\n" for i in range(400))}
    upstream.serve(STATIC_PATH, static_archive(big))
    config = upstream.config(tmp_path / "maltrail.toml", feeds=["urlhaus"])
    out = tmp_path / "trails.mtidx"
    assert _update(capsys, "-c", str(config), "--out", str(out))[0] == 0
    before = _snapshot(out)
    upstream.serve(STATIC_PATH, static_archive(STATIC_FILES), etag='"small"')
    code, _, err = _update(capsys, "-c", str(config), "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and "min_ratio" in err and "--force" in err
    assert _snapshot(out) == before
    code, text, _ = _update(capsys, "-c", str(config), "--out", str(out), "--force")
    assert code == 0 and "installed" in text
    assert not TrailIndex(out).check("host7.bad.example").found


def test_bundle_round_trip_without_network(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, bundle = tmp_path / "a" / "trails.mtidx", tmp_path / "update.tar.gz"
    with FixtureServer() as server:
        upstream = Upstream(server)
        config = upstream.config(tmp_path / "maltrail.toml", ip_minimum_feeds=1,
                                 custom_urls=[f"{server.url}/custom.txt"])
        server.route("/custom.txt", b"# mine\nmy-own-bad.example\n")
        assert _update(capsys, "-c", str(config), "--out", str(out), "--bundle", str(bundle))[0] == 0
    # the upstream is gone: only the bundle can provide the sources now
    again = tmp_path / "b" / "trails.mtidx"
    code, text, err = _update(capsys, "-c", str(config), "--out", str(again), "--from-bundle", str(bundle))
    assert code == 0, err
    first, first_meta, _ = map_arrays(out)
    second, second_meta, _ = map_arrays(again)
    assert first.keys() == second.keys()
    assert [name for name in first if not np.array_equal(first[name], second[name])] == []
    assert first_meta["counts"] == second_meta["counts"]
    assert TrailIndex(again).check("my-own-bad.example").found
    code, rows = _status(capsys, config, again)
    assert code == 0 and {r["state"] for r in rows.values()} == {"ok", "disabled"}


def test_offline_builds_from_the_cache(upstream: Upstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = upstream.config(tmp_path / "maltrail.toml")
    out = tmp_path / "trails.mtidx"
    assert _update(capsys, "-c", str(config), "--out", str(out))[0] == 0
    seen = len(upstream.server.requests)
    out.unlink()
    code, text, _ = _update(capsys, "-c", str(config), "--out", str(out), "--offline")
    assert code == 0 and "installed" in text
    assert len(upstream.server.requests) == seen
    assert TrailIndex(out).check("zeus-gate.example/gate.php").found


def test_only_refreshes_the_named_sources(upstream: Upstream, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = upstream.config(tmp_path / "maltrail.toml")
    out = tmp_path / "trails.mtidx"
    assert _update(capsys, "-c", str(config), "--out", str(out))[0] == 0
    seen = len(upstream.server.requests)
    assert _update(capsys, "-c", str(config), "--out", str(out), "--only", "urlhaus,static")[0] == 0
    asked = {r.path for r in upstream.server.requests[seen:]}
    assert asked == {upstream.paths["urlhaus"][0], STATIC_PATH}
    code, _, err = _update(capsys, "-c", str(config), "--out", str(out), "--only", "nosuchfeed")
    assert code == 2 and "--only: unknown source 'nosuchfeed'" in err


def test_sanity_filters_and_custom_urls(upstream: Upstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Whitelisted rows, bogon/CDN addresses and bare public suffixes never become trails; each is
    counted on its source. Custom URLs: (remote custom), CIDRs of /22 or narrower expanded."""
    path = upstream.paths["minerchk"][0]
    upstream.serve(path, b"miner-pool.example\ngoogle.com\nco.uk\ngithub.io\n10.1.2.3\nwww.miner2.example\n"
                         b"198.51.100.9\n1.1.1.1\n# .com\n")
    upstream.server.route("/list.txt", b"# mine\nbad-one.example\n91.240.118.0/30\n")
    config = upstream.config(tmp_path / "maltrail.toml", feeds=["minerchk"], static_url="",
                             custom_urls=[f"{upstream.server.url}/list.txt"])
    out = tmp_path / "trails.mtidx"
    code, _, err = _update(capsys, "-c", str(config), "--out", str(out))
    assert code == 0, err
    index = TrailIndex(out)
    assert index.check("miner-pool.example").found and index.check("miner2.example").found
    for absent in ("google.com", "co.uk", "github.io", "10.1.2.3", "198.51.100.9", "1.1.1.1"):
        assert index.check(absent).trail != absent, absent
    custom = index.check("bad-one.example")
    assert custom.found and custom.reference == "(remote custom)" and custom.info == "blacklisted"
    assert all(index.check(f"91.240.118.{i}").found for i in range(4))
    rows = _status(capsys, config, out)[1]
    assert rows["minerchk"]["rows"] == 2
    assert rows["minerchk"]["whitelisted"] >= 2  # google.com, 10.1.2.3 (bundled whitelist: 1.1.1.1 too)
    assert rows["minerchk"]["whitelisted"] + rows["minerchk"]["dropped"] == 6


def test_ip_minimum_feeds_keeps_ips_seen_in_enough_feeds(upstream: Upstream, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("blocklist", "greensnow", "rutgers"):
        upstream.serve(upstream.paths[name][0], f"# {name} .1\n77.88.99.1\n77.88.99.{len(name)}\n".encode())
    config = upstream.config(tmp_path / "maltrail.toml", feeds=["blocklist", "greensnow", "rutgers"], static_url="")
    out = tmp_path / "trails.mtidx"
    assert _update(capsys, "-c", str(config), "--out", str(out))[0] == 0
    index = TrailIndex(out)
    hit = index.check("77.88.99.1")
    assert hit.found and hit.reference.count(",") == 1  # one reference plus the two others
    assert not index.check("77.88.99.9").found  # in one feed only


def test_local_static_folder_and_custom_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    static = tmp_path / "static"
    for name, text in STATIC_FILES.items():
        (static / name).parent.mkdir(parents=True, exist_ok=True)
        (static / name).write_text(text)
    empty, custom = tmp_path / "empty", tmp_path / "custom"
    empty.mkdir()
    custom.mkdir()
    (custom / "dprk.txt").write_text("lazarus.example\n")
    config = tmp_path / "maltrail.toml"
    config.write_text(f'[sensor]\ncustom_trails = ["{empty}", "{custom}"]\n[update]\nstatic_url = "{static}"\n'
                      "feeds = []\ndisabled_feeds = [" + ", ".join(f'"{n}"' for n in ENABLED) + "]\n")
    out = tmp_path / "trails.mtidx"
    code, _, err = _update(capsys, "-c", str(config), "--out", str(out))
    assert code == 0, err
    assert TrailIndex(out).check("lazarus.example").reference == "(custom)"
    meta = read_meta(out)
    assert str(custom.resolve()) in meta["provenance"]["custom"]
    (custom / "dprk.txt").unlink()
    os.rmdir(custom)
    code, _, err = _update(capsys, "-c", str(config), "--out", str(out))
    assert code == 2 and str(custom) in err


def test_status_before_any_update(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text, _ = _update(capsys, "--out", str(tmp_path / "t.mtidx"), "--status")
    assert code == 1 and "no update has run yet" in text


def test_update_refuses_to_overwrite_a_trail_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "trails.csv"
    csv.write_text("evil.example,malware,test\n")
    config = tmp_path / "maltrail.toml"
    config.write_text(f'[sensor]\ntrails = "{csv}"\n')
    code, _, err = _update(capsys, "-c", str(config))
    assert code == 2 and "is a trail source, not an index" in err
    assert csv.read_text() == "evil.example,malware,test\n"


def test_unknown_feed_names_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "maltrail.toml"
    config.write_text('[update]\nstatic_url = ""\ndisabled_feeds = ["abuseipdb", "nosuch"]\n')
    code, _, err = _update(capsys, "-c", str(config), "--out", str(tmp_path / "t.mtidx"), "--offline")
    assert code == 2 and "[update] disabled_feeds: unknown feed 'nosuch'" in err


def test_unwritable_cache_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    code, _, err = _update(capsys, "--out", str(blocker / "t.mtidx"), "--offline")
    assert code == 2 and err.count("\n") == 1 and "installed index is unchanged" in err


def test_an_index_replaced_by_hand_is_rebuilt(upstream: Upstream, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = upstream.config(tmp_path / "maltrail.toml")
    out = tmp_path / "trails.mtidx"
    assert _update(capsys, "-c", str(config), "--out", str(out))[0] == 0
    trails = tmp_path / "mine.csv"
    trails.write_text("".join(f"other{i}.example,malware,me\n" for i in range(20)))
    assert main(["trails", "build", "--from", str(trails), "--out", str(out)]) == 0
    code, text, err = _update(capsys, "-c", str(config), "--out", str(out))
    assert code == 0 and "installed" in text, err
    assert TrailIndex(out).check("zeus-gate.example/gate.php").found
