"""Polite, bounded fetching of trail feeds and archives: HTTP(S), `file://` URLs and local paths.

Every failure is a `FetchError` whose message is one line starting with the URL (or archive name).
Sizes are capped while reading and again after every decompression, so a hostile or broken server
cannot make us buffer without bound; a truncated or corrupt compressed body is an error, never a
partial body. Standard library only (urllib).
"""

from __future__ import annotations

import http.client
import io
import lzma
import ssl
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.utils import parsedate_to_datetime

from engine.version import package_version

DEFAULT_MAX_BYTES = 64 << 20


USER_AGENT = f"maltrail-ng/{package_version()} (trail updater; Maltrail-compatible sensor)"

_CHUNK = 1 << 16
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_TAR_BLOCK = 512
_RETRY_STATUSES = frozenset({408, 429})
_MAX_RETRY_AFTER = 60.0
_ZIP_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, RuntimeError,
                      NotImplementedError, ValueError)


class FetchError(Exception):
    """One line: the URL (or archive name) and what went wrong (timeout, HTTP 500, truncated gzip, ...)."""


@dataclass
class FetchResult:
    """The final answer for one requested URL; `body` is None on 304 (not modified), status 0 for local files."""

    url: str
    status: int
    body: bytes | None
    etag: str | None
    last_modified: str | None
    attempts: int
    seconds: float


class _Retryable(Exception):
    """A failed attempt worth repeating; `retry_after` is the wait the server asked for (0 if none)."""

    def __init__(self, reason: str, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass
class Fetcher:
    """Fetching with a timeout per connect and per read, a size cap, retries with back-off and conditional requests.

    `proxy` ("http://host:port") carries http and https; hosts listed in `no_proxy` go direct, as urllib
    decides. Without it the environment's proxy variables are ignored, so only the configuration counts.
    """

    timeout: float = 30.0
    max_bytes: int = DEFAULT_MAX_BYTES
    proxy: str | None = None
    retries: int = 3
    backoff: float = 1.0

    def get(self, url: str, etag: str | None = None, last_modified: str | None = None, *,
            unpack: bool = True) -> FetchResult:
        """Fetch `url` (http, https, file or a local path); `unpack=False` keeps a .gz / .zip body as is.

        Content-Encoding is always removed. Timeouts, connection errors, truncated bodies, 5xx, 408 and 429
        are retried; other failures raise at once.
        """
        started = time.monotonic()
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            data = self._read_local(url, scheme)
            body = _unpack(data, self.max_bytes, url) if unpack else data
            return FetchResult(url, 0, body, None, None, 1, time.monotonic() - started)

        opener = self._opener()
        attempts = 0
        while True:
            attempts += 1
            try:
                status, raw, headers = self._attempt(opener, url, etag, last_modified)
                break
            except _Retryable as exc:
                if attempts > self.retries:
                    after = f" (after {attempts} attempts)" if attempts > 1 else ""
                    raise FetchError(f"{url}: {exc}{after}") from None
                time.sleep(max(self.backoff * 2 ** (attempts - 1), exc.retry_after))

        if raw is None:
            body = None
            etag = headers.get("ETag") or etag
            last_modified = headers.get("Last-Modified") or last_modified
        else:
            body = _decode(raw, headers.get("Content-Encoding", ""), self.max_bytes, url)
            if unpack:
                body = _unpack(body, self.max_bytes, url)
            etag = headers.get("ETag")
            last_modified = headers.get("Last-Modified")
        return FetchResult(url, status, body, etag, last_modified, attempts, time.monotonic() - started)

    def _opener(self) -> urllib.request.OpenerDirector:
        proxies = {"http": self.proxy, "https": self.proxy} if self.proxy else {}
        return urllib.request.build_opener(urllib.request.ProxyHandler(proxies))

    def _attempt(self, opener: urllib.request.OpenerDirector, url: str, etag: str | None,
                 last_modified: str | None) -> tuple[int, bytes | None, Message]:
        """One request: (status, raw body or None for 304, headers); `_Retryable` when worth repeating."""
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "gzip, deflate"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        try:
            with opener.open(urllib.request.Request(url, headers=headers), timeout=self.timeout) as response:
                return response.status, self._read_capped(response, url), response.headers
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 304:
                return 304, None, exc.headers
            if exc.code >= 500 or exc.code in _RETRY_STATUSES:
                raise _Retryable(f"HTTP {exc.code}", _retry_after(exc.headers.get("Retry-After"))) from None
            if exc.code < 400:  # urllib gave up redirecting (loop, too many, or to a scheme it refuses)
                raise FetchError(f"{url}: HTTP {exc.code}: {exc.reason}") from None
            raise FetchError(f"{url}: HTTP {exc.code}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                raise FetchError(f"{url}: {exc.reason.verify_message or exc.reason}") from None
            if isinstance(exc.reason, TimeoutError):
                raise _Retryable(f"timed out after {self.timeout:g} s") from None
            raise _Retryable(f"connection failed ({exc.reason})") from None
        except TimeoutError:
            raise _Retryable(f"timed out after {self.timeout:g} s") from None
        except http.client.IncompleteRead as exc:
            raise _Retryable(f"truncated body ({len(exc.partial)} bytes read)") from None
        except (http.client.HTTPException, OSError) as exc:
            raise _Retryable(f"connection failed ({exc or type(exc).__name__})") from None

    def _read_capped(self, response: http.client.HTTPResponse, url: str) -> bytes:
        """The raw body, read in chunks and abandoned as soon as it passes `max_bytes`."""
        declared = response.headers.get("Content-Length", "").strip()
        length = int(declared) if declared.isdigit() else None
        if length is not None and length > self.max_bytes:
            raise FetchError(f"{url}: body over {self.max_bytes} bytes (Content-Length {length})")
        data = bytearray()
        while chunk := response.read(min(_CHUNK, self.max_bytes + 1 - len(data))):
            data += chunk
            if len(data) > self.max_bytes:
                raise FetchError(f"{url}: body over {self.max_bytes} bytes")
        if length is not None and len(data) < length:
            raise _Retryable(f"truncated body ({len(data)} of {length} bytes)")
        return bytes(data)

    def _read_local(self, url: str, scheme: str) -> bytes:
        if scheme == "file":
            parts = urllib.parse.urlsplit(url)
            if parts.netloc not in ("", "localhost"):
                raise FetchError(f"{url}: file URL on another host")
            path = urllib.request.url2pathname(parts.path)
        elif scheme:
            raise FetchError(f"{url}: unsupported URL scheme {scheme!r}")
        else:
            path = url
        try:
            with open(path, "rb") as handle:
                data = handle.read(self.max_bytes + 1)
        except OSError as exc:
            raise FetchError(f"{url}: {exc.strerror or exc}") from None
        if len(data) > self.max_bytes:
            raise FetchError(f"{url}: body over {self.max_bytes} bytes")
        return data


def _retry_after(value: str | None) -> float:
    """The server's Retry-After (seconds or an HTTP date) as a wait, capped; 0 when absent or unreadable."""
    value = (value or "").strip()
    if value.isdigit():
        return min(float(value), _MAX_RETRY_AFTER)
    try:
        seconds = parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return 0.0
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def _decode(raw: bytes, encoding: str, limit: int, label: str) -> bytes:
    """The body with its Content-Encoding removed."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity") or not raw:
        return raw
    if encoding in ("gzip", "x-gzip"):
        return _inflate(raw, 31, limit, label, "gzip")
    if encoding == "deflate":  # meant to be zlib-wrapped, but some servers send raw deflate
        zlib_header = len(raw) > 1 and raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0
        return _inflate(raw, 15 if zlib_header else -15, limit, label, "deflate")
    raise FetchError(f"{label}: unsupported Content-Encoding {encoding!r}")


def _inflate(data: bytes, wbits: int, limit: int, label: str, kind: str) -> bytes:
    """A whole zlib / gzip (every member) / raw deflate stream, at most `limit` bytes of output."""
    out = bytearray()
    pending = data
    try:
        while True:
            stream = zlib.decompressobj(wbits)
            while not stream.eof:
                chunk = stream.decompress(pending, limit + 1 - len(out))
                pending = stream.unconsumed_tail
                out += chunk
                if len(out) > limit:
                    raise FetchError(f"{label}: {kind} content over {limit} bytes")
                if not chunk and not pending:
                    raise FetchError(f"{label}: truncated {kind}")
            pending = stream.unused_data
            if wbits != 31 or not pending.startswith(_GZIP_MAGIC):
                break
    except zlib.error:
        raise FetchError(f"{label}: corrupt {kind}") from None
    if pending.strip(b"\0"):
        raise FetchError(f"{label}: corrupt {kind} (data after its end)")
    return bytes(out)


def _unpack(data: bytes, limit: int, label: str) -> bytes:
    """A gzip file gunzipped; a zip reduced to its one file (several: text members joined in name order)."""
    if data.startswith(_GZIP_MAGIC):
        return _inflate(data, 31, limit, label, "gzip")
    if not data.startswith(_ZIP_MAGICS):
        return data
    members = sorted(_zip_members(data, limit, label))
    if len(members) == 1:
        return members[0][1]
    texts = [body for _, body in members if b"\0" not in body]
    if members and not texts:
        raise FetchError(f"{label}: zip holds no text file")
    return b"".join(text if text.endswith(b"\n") else text + b"\n" for text in texts if text)


def archive_members(data: bytes, name_hint: str = "", max_bytes: int = DEFAULT_MAX_BYTES
                    ) -> Iterator[tuple[str, bytes]]:
    """(name, content) of each regular file of a tar, tar.gz or zip archive (from magic bytes), in archive order.

    `name_hint` names the archive in errors. The decompressed total is capped at `max_bytes` (bombs);
    an absolute or `..` member path refuses the whole archive; truncation or corruption is a FetchError.
    """
    label = name_hint or "archive"
    if data.startswith(_ZIP_MAGICS):
        yield from _zip_members(data, max_bytes, label)
        return
    if data.startswith(_GZIP_MAGIC):
        data = _inflate(data, 31, max_bytes, label, "gzip")
    yield from _tar_members(data, max_bytes, label)


def _safe_name(name: str, label: str) -> str:
    """The member path made relative and tidy; absolute or `..` paths could escape an extraction folder."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or name[1:2] == ":" or ".." in parts:
        raise FetchError(f"{label}: unsafe member path {name!r}")
    return "/".join(part for part in parts if part not in ("", "."))


def _tar_members(data: bytes, limit: int, label: str) -> Iterator[tuple[str, bytes]]:
    archive = None
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for member in archive:
                if not member.isreg():
                    continue
                name = _safe_name(member.name, label)
                total += member.size
                if total > limit:
                    raise FetchError(f"{label}: archive content over {limit} bytes")
                if member.issparse():
                    handle = archive.extractfile(member)
                    assert handle is not None  # a regular member always has content
                    yield name, handle.read()
                else:  # its bytes lie in the archive as they are: a slice, no file object per member
                    body = data[member.offset_data : member.offset_data + member.size]
                    if len(body) < member.size:
                        raise FetchError(f"{label}: truncated or corrupt tar ({member.name} cut short)")
                    yield name, body
            end = archive.offset
    except (tarfile.TarError, EOFError) as exc:
        what = "truncated or corrupt tar" if archive else "not a tar or zip archive"
        raise FetchError(f"{label}: {what} ({exc})") from None
    # tarfile ends quietly at a truncated or damaged header; a complete archive ends with a zero block there.
    if data[end:end + _TAR_BLOCK] != bytes(_TAR_BLOCK):
        raise FetchError(f"{label}: truncated or corrupt tar (no end-of-archive block)")


def _zip_members(data: bytes, limit: int, label: str) -> Iterator[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, EOFError, ValueError):
        raise FetchError(f"{label}: truncated or corrupt zip") from None
    total = 0
    with archive:
        for info in archive.infolist():
            kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0  # unix file type, if any
            if info.is_dir() or kind not in (0, stat.S_IFREG):
                continue
            name = _safe_name(info.filename, label)
            try:
                with archive.open(info) as member:
                    body = member.read(limit + 1 - total)
            except _ZIP_MEMBER_ERRORS as exc:
                raise FetchError(f"{label}: truncated or corrupt zip ({info.filename}: {exc})") from None
            total += len(body)
            if total > limit:
                raise FetchError(f"{label}: archive content over {limit} bytes")
            yield name, body
