"""engine.update.fetch against a real local HTTP server (tests/httpfixture.py) and local files."""

from __future__ import annotations

import gzip
import io
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from httpfixture import FixtureServer, ProxyServer

from engine.update.fetch import USER_AGENT, Fetcher, FetchError, archive_members

FEED = b"# feed\n1.2.3.4\nevil.example\n"
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"


@pytest.fixture
def server() -> Iterator[FixtureServer]:
    with FixtureServer() as fixture:
        yield fixture


def fetcher(**options: Any) -> Fetcher:
    """Fast settings: short timeouts and back-off, so failures take fractions of a second."""
    return Fetcher(**{"timeout": 0.3, "backoff": 0.01, "retries": 2, **options})


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def make_tar_gz(files: dict[str, bytes], extra: tuple[tarfile.TarInfo, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info in extra:
            archive.addfile(info)
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_plain_200(server: FixtureServer) -> None:
    server.route("/feed.txt", FEED, etag='"v1"', last_modified=LAST_MODIFIED)
    result = fetcher().get(server.url + "/feed.txt")
    assert (result.status, result.body, result.etag, result.last_modified) == (200, FEED, '"v1"', LAST_MODIFIED)
    assert result.attempts == 1 and result.url == server.url + "/feed.txt" and result.seconds < 1
    assert "if-none-match" not in server.requests[0].headers


def test_user_agent_and_accept_encoding_sent(server: FixtureServer) -> None:
    server.route("/feed.txt", FEED)
    fetcher().get(server.url + "/feed.txt")
    headers = server.requests[0].headers
    assert headers["user-agent"] == USER_AGENT and USER_AGENT.startswith("maltrail-ng/")
    assert headers["accept-encoding"] == "gzip, deflate"


def test_etag_not_modified(server: FixtureServer) -> None:
    server.route("/feed.txt", FEED, etag='"v1"')
    result = fetcher().get(server.url + "/feed.txt", etag='"v1"')
    assert (result.status, result.body, result.etag) == (304, None, '"v1"')
    assert server.requests[0].headers["if-none-match"] == '"v1"'
    server.route("/feed.txt", FEED + b"new\n", etag='"v2"')
    changed = fetcher().get(server.url + "/feed.txt", etag='"v1"')
    assert (changed.status, changed.body, changed.etag) == (200, FEED + b"new\n", '"v2"')


def test_last_modified_not_modified(server: FixtureServer) -> None:
    server.route("/feed.txt", FEED, last_modified=LAST_MODIFIED)
    result = fetcher().get(server.url + "/feed.txt", last_modified=LAST_MODIFIED)
    assert (result.status, result.body, result.last_modified) == (304, None, LAST_MODIFIED)
    assert server.requests[0].headers["if-modified-since"] == LAST_MODIFIED
    older = "Tue, 20 Oct 2015 07:28:00 GMT"
    assert fetcher().get(server.url + "/feed.txt", last_modified=older).body == FEED


def test_gzip_content_encoding(server: FixtureServer) -> None:
    server.route("/feed.txt", FEED * 1000, gzip_encoding=True)
    assert fetcher().get(server.url + "/feed.txt").body == FEED * 1000


@pytest.mark.parametrize("compress", [zlib.compress, lambda data: zlib.compress(data)[2:-4]], ids=["zlib", "raw"])
def test_deflate_content_encoding(server: FixtureServer, compress: Callable[[bytes], bytes]) -> None:
    server.route("/feed.txt", compress(FEED), headers={"Content-Encoding": "deflate"})
    assert fetcher().get(server.url + "/feed.txt").body == FEED


def test_gz_body_unpacked(server: FixtureServer) -> None:
    server.route("/feed.txt.gz", gzip.compress(FEED), content_type="application/gzip")
    assert fetcher().get(server.url + "/feed.txt.gz").body == FEED
    raw = fetcher().get(server.url + "/feed.txt.gz", unpack=False).body
    assert raw is not None and gzip.decompress(raw) == FEED


def test_zip_body(server: FixtureServer) -> None:
    server.route("/one.zip", make_zip({"feed.txt": FEED}), content_type="application/zip")
    assert fetcher().get(server.url + "/one.zip").body == FEED
    several = make_zip({"b.txt": b"2.2.2.2", "a.txt": b"1.1.1.1\n", "bin.dat": b"\0\1\2", "dir/": b""})
    server.route("/several.zip", several, content_type="application/zip")
    assert fetcher().get(server.url + "/several.zip").body == b"1.1.1.1\n2.2.2.2\n"


def test_zip_archive_members(server: FixtureServer) -> None:
    server.route("/trails.zip", make_zip({"trails/static/a.txt": b"a\n", "trails/": b"", "b.csv": b"b\n"}))
    data = fetcher().get(server.url + "/trails.zip", unpack=False).body
    assert data is not None and data.startswith(b"PK")
    assert list(archive_members(data)) == [("trails/static/a.txt", b"a\n"), ("b.csv", b"b\n")]


def test_tar_gz_archive_members(server: FixtureServer) -> None:
    folder = tarfile.TarInfo("trails")
    folder.type = tarfile.DIRTYPE
    link = tarfile.TarInfo("trails/link.txt")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    archive = make_tar_gz({"./trails/static/malware/x.txt": b"x.example\n", "trails/b.csv": b"b\n"}, (folder, link))
    server.route("/trails.tar.gz", archive, content_type="application/gzip")
    data = fetcher().get(server.url + "/trails.tar.gz", unpack=False).body
    assert data == archive
    expected = [("trails/static/malware/x.txt", b"x.example\n"), ("trails/b.csv", b"b\n")]
    assert list(archive_members(data, "trails.tar.gz")) == expected
    assert list(archive_members(gzip.decompress(archive))) == expected  # plain tar (what unpack=True gives)


@pytest.mark.parametrize("name", ["../evil.txt", "trails/../../evil.txt", "/etc/cron.d/evil"])
def test_archive_unsafe_member_refused(name: str) -> None:
    with pytest.raises(FetchError, match="trails.tar.gz: unsafe member path"):
        list(archive_members(make_tar_gz({"ok.txt": b"ok\n", name: b"x\n"}), "trails.tar.gz"))
    with pytest.raises(FetchError, match="unsafe member path"):
        list(archive_members(make_zip({name: b"x\n"})))


def test_archive_truncated_or_corrupt() -> None:
    archive = make_tar_gz({"a.txt": b"a\n" * 5000, "b.txt": b"b\n"})
    with pytest.raises(FetchError, match="x.tgz: truncated gzip"):
        list(archive_members(archive[: len(archive) // 2], "x.tgz"))
    tar = gzip.decompress(archive)
    with pytest.raises(FetchError, match="truncated or corrupt tar"):
        list(archive_members(tar[:2048]))  # cut inside a member's data
    with pytest.raises(FetchError, match="no end-of-archive block"):
        list(archive_members(tar[:512 * 21]))  # cut between members: tarfile alone would end quietly
    with pytest.raises(FetchError, match="truncated or corrupt tar"):
        list(archive_members(tar[:512 * 21] + b"\xff" * 512 + tar[512 * 22:]))  # damaged header
    with pytest.raises(FetchError, match="truncated or corrupt zip"):
        list(archive_members(make_zip({"a.txt": b"a\n"})[:-30]))
    with pytest.raises(FetchError, match="not a tar or zip archive"):
        list(archive_members(b"just text\n" * 100))


def test_archive_size_cap() -> None:
    bomb = make_tar_gz({"a.txt": bytes(600_000), "b.txt": bytes(600_000)})
    with pytest.raises(FetchError, match="over 1000000 bytes"):
        list(archive_members(bomb, max_bytes=1_000_000))
    with pytest.raises(FetchError, match="archive content over 1000000 bytes"):
        list(archive_members(make_zip({"a.txt": bytes(600_000), "b.txt": bytes(600_000)}), max_bytes=1_000_000))


def test_redirect_followed(server: FixtureServer) -> None:
    server.route("/old.txt", b"", redirect_to="/new.txt", status=301)
    server.route("/new.txt", FEED, etag='"n"')
    result = fetcher().get(server.url + "/old.txt")
    assert (result.status, result.body, result.etag) == (200, FEED, '"n"')
    assert (server.count("/old.txt"), server.count("/new.txt")) == (1, 1)


def test_redirect_loop_fails(server: FixtureServer) -> None:
    server.route("/loop", b"", redirect_to="/loop")
    with pytest.raises(FetchError, match=r"/loop: HTTP 302"):
        fetcher().get(server.url + "/loop")


def test_redirect_to_file_refused(server: FixtureServer, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"secret\n")
    server.route("/feed.txt", b"", redirect_to=secret.as_uri())
    with pytest.raises(FetchError, match=r"feed\.txt: HTTP 302: .*not allowed"):
        fetcher().get(server.url + "/feed.txt")


def test_timeout_before_answer(server: FixtureServer) -> None:
    server.route("/slow.txt", FEED, delay=2.0)
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"^http://127\.0\.0\.1:\d+/slow\.txt: timed out after 0\.3 s$"):
        fetcher(retries=0).get(server.url + "/slow.txt")
    assert time.monotonic() - started < 1.5


def test_stall_mid_body(server: FixtureServer) -> None:
    server.route("/stall.txt", FEED * 100, stall_after=100)
    with pytest.raises(FetchError, match=r"stall\.txt: timed out after 0\.3 s \(after 2 attempts\)$"):
        fetcher(retries=1).get(server.url + "/stall.txt")
    assert server.count("/stall.txt") == 2


def test_retried_until_success(server: FixtureServer) -> None:
    server.route("/flaky.txt", FEED, fail_times=2)
    result = fetcher(retries=3).get(server.url + "/flaky.txt")
    assert (result.status, result.body, result.attempts) == (200, FEED, 3)
    assert server.count("/flaky.txt") == 3


def test_always_500(server: FixtureServer) -> None:
    server.route("/down.txt", FEED, fail_times=99)
    with pytest.raises(FetchError, match=r"down\.txt: HTTP 500 \(after 4 attempts\)$"):
        fetcher(retries=3).get(server.url + "/down.txt")
    assert server.count("/down.txt") == 4


def test_backoff_doubles(server: FixtureServer) -> None:
    server.route("/down.txt", FEED, fail_times=99, fail_status=503)
    started = time.monotonic()
    with pytest.raises(FetchError, match="HTTP 503"):
        fetcher(retries=3, backoff=0.1).get(server.url + "/down.txt")
    assert 0.7 <= time.monotonic() - started < 2.0  # 0.1 + 0.2 + 0.4


def test_429_honours_retry_after(server: FixtureServer) -> None:
    server.route("/busy.txt", FEED, fail_times=1, fail_status=429, fail_headers={"Retry-After": "1"})
    started = time.monotonic()
    result = fetcher().get(server.url + "/busy.txt")
    assert (result.body, result.attempts) == (FEED, 2) and time.monotonic() - started >= 1.0


def test_404_fails_at_once(server: FixtureServer) -> None:
    with pytest.raises(FetchError, match=r"missing\.txt: HTTP 404$"):
        fetcher(retries=3).get(server.url + "/missing.txt")
    assert server.count("/missing.txt") == 1


def test_connection_refused_retried() -> None:
    with FixtureServer() as gone:
        url = gone.url + "/feed.txt"
    with pytest.raises(FetchError, match=r"feed\.txt: connection failed \(.*refused.*\) \(after 2 attempts\)$"):
        fetcher(retries=1).get(url)


def test_empty_body(server: FixtureServer) -> None:
    server.route("/empty.txt", b"")
    result = fetcher().get(server.url + "/empty.txt")
    assert (result.status, result.body) == (200, b"")


def test_truncated_gzip(server: FixtureServer) -> None:
    whole = gzip.compress(FEED * 500)
    server.route("/feed.txt.gz", whole[: len(whole) // 2])
    with pytest.raises(FetchError, match=r"feed\.txt\.gz: truncated gzip$"):
        fetcher().get(server.url + "/feed.txt.gz")
    server.route("/encoded.txt", whole[:-4], headers={"Content-Encoding": "gzip"})
    with pytest.raises(FetchError, match=r"encoded\.txt: truncated gzip$"):
        fetcher().get(server.url + "/encoded.txt")
    server.route("/corrupt.txt.gz", whole[:10] + bytes(len(whole) - 10))
    with pytest.raises(FetchError, match=r"corrupt\.txt\.gz: corrupt gzip$"):
        fetcher().get(server.url + "/corrupt.txt.gz")


def test_truncated_zip(server: FixtureServer) -> None:
    server.route("/feed.zip", make_zip({"feed.txt": FEED * 100})[:-40])
    with pytest.raises(FetchError, match=r"feed\.zip: truncated or corrupt zip"):
        fetcher().get(server.url + "/feed.zip")


def test_truncated_body_retried(server: FixtureServer) -> None:
    server.route("/short.txt", FEED, headers={"Content-Length": str(len(FEED) + 100)})
    with pytest.raises(FetchError, match=r"short\.txt: truncated body .* \(after 3 attempts\)$"):
        fetcher().get(server.url + "/short.txt")


def test_body_over_cap(server: FixtureServer) -> None:
    server.route("/big.txt", b"x" * 5000)
    with pytest.raises(FetchError, match=r"big\.txt: body over 1000 bytes"):
        fetcher(max_bytes=1000).get(server.url + "/big.txt")
    server.route("/big.txt", b"x" * 5000, headers={"Content-Length": None})  # no length: the cap stops the read
    with pytest.raises(FetchError, match=r"big\.txt: body over 1000 bytes$"):
        fetcher(max_bytes=1000).get(server.url + "/big.txt")
    server.route("/bomb.txt.gz", gzip.compress(bytes(100_000)))
    with pytest.raises(FetchError, match=r"bomb\.txt\.gz: gzip content over 1000 bytes$"):
        fetcher(max_bytes=1000).get(server.url + "/bomb.txt.gz")
    server.route("/exact.txt", b"x" * 1000, headers={"Content-Length": None})
    assert fetcher(max_bytes=1000).get(server.url + "/exact.txt").body == b"x" * 1000


def test_proxy_used(server: FixtureServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server.route("/feed.txt", FEED, etag='"p"')
    with ProxyServer() as proxy:
        result = fetcher(proxy=proxy.url).get(server.url + "/feed.txt")
        not_modified = fetcher(proxy=proxy.url).get(server.url + "/feed.txt", etag='"p"')
    assert (result.body, not_modified.status) == (FEED, 304)
    assert proxy.forwarded == [server.url + "/feed.txt"] * 2
    assert server.requests[0].headers["user-agent"] == USER_AGENT


def test_environment_proxy_ignored(server: FixtureServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    server.route("/feed.txt", FEED)
    assert fetcher().get(server.url + "/feed.txt").body == FEED


def test_local_files(tmp_path: Path) -> None:
    plain = tmp_path / "feed.txt"
    plain.write_bytes(FEED)
    packed = tmp_path / "feed.txt.gz"
    packed.write_bytes(gzip.compress(FEED))
    for url in (plain.as_uri(), str(plain), packed.as_uri(), str(packed)):
        result = fetcher().get(url)
        assert (result.status, result.body, result.etag, result.attempts) == (0, FEED, None, 1)
    with pytest.raises(FetchError, match=r"missing\.txt: No such file or directory$"):
        fetcher().get(str(tmp_path / "missing.txt"))
    with pytest.raises(FetchError, match=r"feed\.txt: body over 10 bytes$"):
        fetcher(max_bytes=10).get(plain.as_uri())
    with pytest.raises(FetchError, match="unsupported URL scheme 'ftp'"):
        fetcher().get("ftp://127.0.0.1/feed.txt")
