"""Delivering one encoded event: UDP datagram, TCP or TLS stream, file append, HTTP POST.

A transport raises OSError for a failure worth retrying (it reconnects on the next send) and
`PermanentError` for one that retrying cannot fix (an HTTP 4xx answer).
"""

from __future__ import annotations

import os
import socket
import ssl
import urllib.error
import urllib.request
from typing import Protocol

from engine.outputs.spec import OutputSpec


class PermanentError(Exception):
    """The receiver refused this event for good; it is counted as failed, not retried."""


class Transport(Protocol):
    def open(self) -> None:
        """Connect (or open) if not yet: the sender encodes only after this succeeds."""

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...


def tls_context(spec: OutputSpec) -> ssl.SSLContext:
    """Verifies the receiver against `tls_ca` (else the system's CAs) unless `tls_verify = false`."""
    context = ssl.create_default_context(cafile=spec.tls_ca or None)
    if not spec.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _SocketTransport:
    """Connects on first use; a failed write closes the socket, so the next send reconnects."""

    _sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        raise NotImplementedError

    def _write(self, sock: socket.socket, data: bytes) -> None:
        sock.sendall(data)

    def open(self) -> None:
        if self._sock is None:
            self._sock = self._connect()

    def send(self, data: bytes) -> None:
        self.open()
        assert self._sock is not None
        try:
            self._write(self._sock, data)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class DatagramTransport(_SocketTransport):
    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)

    def _connect(self) -> socket.socket:
        info = socket.getaddrinfo(*self.address, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(info[0], socket.SOCK_DGRAM)
        sock.connect(info[4])  # a refused port then shows as ECONNREFUSED on a later send
        return sock

    def _write(self, sock: socket.socket, data: bytes) -> None:
        sock.send(data)


class StreamTransport(_SocketTransport):
    """TCP, or TLS over TCP with `context`."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext | None = None,
                 server_name: str = "") -> None:
        self.address, self.timeout, self.context = (host, port), timeout, context
        self.server_name = server_name or host

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=self.timeout)
        if self.context is None:
            return sock
        try:
            return self.context.wrap_socket(sock, server_hostname=self.server_name)
        except OSError:
            sock.close()
            raise


class FileTransport:
    """Appends lines to a file (reopened after an error, so a rotated file is recreated)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def open(self) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def send(self, data: bytes) -> None:
        self.open()
        assert self._fd is not None
        try:
            os.write(self._fd, data)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class HttpTransport:
    """POST of a JSON body; 5xx and 429 are retried, other 4xx are not."""

    def __init__(self, spec: OutputSpec) -> None:
        self.url, self.timeout = spec.url, spec.timeout
        self.context = tls_context(spec) if spec.url.startswith("https:") else None

    def open(self) -> None:
        """Each POST connects anew."""

    def send(self, data: bytes) -> None:
        request = urllib.request.Request(self.url, data=data, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "maltrail-ng"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            if exc.code >= 500 or exc.code == 429:
                raise OSError(f"HTTP {exc.code}") from None
            raise PermanentError(f"HTTP {exc.code}") from None

    def close(self) -> None:
        pass


def transport_for(spec: OutputSpec) -> Transport:
    if spec.type == "webhook":
        return HttpTransport(spec)
    if spec.path:
        return FileTransport(spec.path)
    if spec.protocol == "udp":
        return DatagramTransport(spec.host, spec.port)
    context = tls_context(spec) if spec.protocol == "tls" else None
    return StreamTransport(spec.host, spec.port, spec.timeout, context, spec.tls_server_name)
