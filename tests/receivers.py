"""Real receivers on 127.0.0.1 for the output tests: syslog (UDP, TCP, TLS with a CA made here), a
JSON line reader, a webhook HTTP server, a Maltrail-style UDP collector; and a strict CEF parser.

Each receiver runs in a thread, keeps what it got, and can be killed mid-run (`stop`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

RFC5424 = re.compile(r"<(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) (-|\[.*?\]) (.*)", re.S)


def parse_cef(text: str) -> dict[str, Any]:
    """CEF:0 header (7 `|`-separated fields, `\\|` and `\\\\` escaped) and the extension's key=value
    pairs (`\\=`, `\\\\`, `\\n`, `\\r` escaped; a value runs up to the next unescaped ` key=`)."""
    assert text.startswith("CEF:0|"), text
    header, i, cur = [], 4, ""
    while len(header) < 7:
        i += 1
        ch = text[i]
        if ch == "\\":
            i += 1
            cur += text[i]
        elif ch == "|":
            header.append(cur)
            cur = ""
        else:
            cur += ch
    ext_text = text[i + 1:]
    ext: dict[str, str] = {}
    for m in re.finditer(r"(\w+)=((?:[^\\=]|\\.)*?)(?= \w+=|$)", ext_text):
        ext[m.group(1)] = re.sub(r"\\(.)", lambda e: {"n": "\n", "r": "\r"}.get(e.group(1), e.group(1)), m.group(2))
    keys = ("version", "vendor", "product", "device_version", "class_id", "name", "severity")
    return {**dict(zip(keys, ["0", *header[1:]], strict=True)), "ext": ext}


def parse_syslog(frame: bytes) -> dict[str, Any]:
    m = RFC5424.fullmatch(frame.decode())
    assert m, frame
    pri, ts, host, app, procid, msgid, sd, msg = m.groups()
    return {"pri": int(pri), "timestamp": ts, "host": host, "app": app, "msgid": msgid, "cef": parse_cef(msg)}


@dataclass
class Receiver:
    """Common: address, what arrived, stop."""

    port: int = 0
    got: list[bytes] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _socks: list[socket.socket] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_for(self, count: int, timeout: float = 30.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.got) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.got)

    def stop(self) -> None:
        """Closes the listening and accepted sockets: the sender sees resets / refused ports."""
        self._stop.set()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self._threads:
            t.join(5)

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)


class UdpReceiver(Receiver):
    def __init__(self) -> None:
        super().__init__()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.1)
        self.port = sock.getsockname()[1]
        self._socks.append(sock)
        self._spawn(self._loop, sock)

    def _loop(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                self.got.append(sock.recv(65536))
            except TimeoutError:
                continue
            except OSError:
                return


class StreamReceiver(Receiver):
    """TCP (optionally TLS); frames are RFC 6587 octet-counted (`framing="octets"`) or lines."""

    def __init__(self, framing: str, context: ssl.SSLContext | None = None, stall_after: int = 0,
                 rcvbuf: int = 0) -> None:
        """`stall_after`: frames read before it stops reading (a hung SIEM: the connection stays open
        and the sender's writes pile up in the kernels); `rcvbuf`: SO_RCVBUF of its connections."""
        super().__init__()
        self.framing, self.context, self.stall_after = framing, context, stall_after
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # inherited by accepted sockets
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.settimeout(0.1)
        self.port = sock.getsockname()[1]
        self.connections = 0
        self._socks.append(sock)
        self._spawn(self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.context is not None:
                conn.settimeout(5)
                try:
                    conn = self.context.wrap_socket(conn, server_side=True)
                except (OSError, ssl.SSLError):
                    conn.close()
                    continue
            self.connections += 1
            conn.settimeout(0.1)
            self._socks.append(conn)
            self._spawn(self._read, conn)

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        while not self._stop.is_set():
            if self.stall_after and len(self.got) >= self.stall_after:
                self._stop.wait(0.05)
                continue
            try:
                data = conn.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except OSError:
                return
            if not data:
                return
            buf += data
            buf = self._frames(buf)

    def _frames(self, buf: bytes) -> bytes:
        while True:
            if self.framing == "lines":
                line, sep, rest = buf.partition(b"\n")
                if not sep:
                    return buf
                self.got.append(line)
                buf = rest
            else:
                length, sep, rest = buf.partition(b" ")
                if not sep or len(rest) < int(length):
                    return buf
                self.got.append(rest[:int(length)])
                buf = rest[int(length):]


@dataclass
class TestCA:
    """A CA and a server certificate for 127.0.0.1 / localhost, written as PEM files."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_ca(folder: Path) -> TestCA:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "maltrail test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    out = TestCA(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    out.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return out


class WebhookReceiver(Receiver):
    """HTTP server recording every POST body (JSON); `fail_first` answers 503 to that many first,
    `delay` holds every answer that many seconds."""

    def __init__(self, fail_first: int = 0, delay: float = 0.0) -> None:
        super().__init__()
        owner = self
        self.fail_first, self.delay = fail_first, delay
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.requests += 1
                if owner.delay:
                    time.sleep(owner.delay)  # a receiver that hangs: the sender's timeout must fire
                if owner.requests <= owner.fail_first:
                    self.send_response(503)
                else:
                    owner.got.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._spawn(self.server.serve_forever, 0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(b) for b in self.got]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        super().stop()
