"""Delivering one encoded event: UDP datagram, TCP or TLS stream, file append, HTTP POST.

A transport raises OSError for a failure worth retrying (it reconnects on the next send) and
`PermanentError` for one that retrying cannot fix (an HTTP 4xx answer).
"""

from __future__ import annotations

import fcntl
import os
import socket
import ssl
import struct
import sys
import termios
import urllib.error
import urllib.request
from collections import deque
from typing import Protocol

from engine.outputs.spec import OutputSpec

# SIOCOUTQ (TIOCOUTQ's number on Linux): bytes written and not yet acknowledged by the peer.
ACK_TRACKING = sys.platform == "linux" and hasattr(socket, "TCP_INFO")
TCP_ESTABLISHED, TCP_CLOSE_WAIT = 1, 8  # tcp_info.tcpi_state


class PermanentError(Exception):
    """The receiver refused this event for good; it is counted as failed, not retried."""


class Transport(Protocol):
    lost: int

    def open(self) -> None:
        """Connect (or open) if not yet: the sender encodes only after this succeeds."""

    def send(self, data: bytes, events: int) -> int:
        """Events known delivered since the last call (this write's, and earlier writes' on a stream)."""

    def settle(self) -> int:
        """Like `send`'s answer, without writing (a stream's later acknowledgements)."""

    def unconfirmed(self) -> int:
        """Events written and not yet known delivered."""

    def close(self) -> None: ...


def tls_context(spec: OutputSpec) -> ssl.SSLContext:
    """Verifies the receiver against `tls_ca` (else the system's CAs) unless `tls_verify = false`."""
    context = ssl.create_default_context(cafile=spec.tls_ca or None)
    if not spec.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _Delivered:
    """A transport whose successful write is a delivery (nothing to settle later, nothing lost)."""

    lost = 0  # events written on a connection that ended before the receiver acknowledged them

    def settle(self) -> int:
        return 0

    def unconfirmed(self) -> int:
        return 0


class _SocketTransport(_Delivered):
    """Connects on first use; a failed write closes the socket, so the next send reconnects."""

    _sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        raise NotImplementedError

    def _write(self, sock: socket.socket, data: bytes) -> None:
        sock.sendall(data)

    def _written(self, nbytes: int, events: int) -> int:
        """After a write: how many events are now known delivered (a datagram: once the kernel took it)."""
        return events

    def open(self) -> None:
        if self._sock is None:
            self._sock = self._connect()

    def send(self, data: bytes, events: int) -> int:
        """Write `data` (`events` events); returns the events delivered since the last call."""
        self.open()
        assert self._sock is not None
        try:
            self._write(self._sock, data)
        except OSError:
            self.close()
            raise
        return self._written(len(data), events)

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
    """TCP, or TLS over TCP with `context`.

    An event counts as delivered once the receiver's kernel has acknowledged its last byte: the
    bytes still in our send queue (SIOCOUTQ) are not delivered, and when the connection dies
    (reset, or closed at exit) the events they hold count as `lost`. With TLS the queue holds
    ciphertext, a little longer than the text it carries, so the count errs towards not delivered.
    What the receiver's kernel acknowledged but its process never read stays invisible: at most
    its socket receive buffer. Without SIOCOUTQ (not Linux) a write the kernel took counts."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext | None = None,
                 server_name: str = "") -> None:
        self.address, self.timeout, self.context = (host, port), timeout, context
        self.server_name = server_name or host
        self._bytes = 0  # written on this connection
        self._unacked: deque[tuple[int, int]] = deque()  # (bytes written up to an event batch's end, its events)
        self._pending = 0  # events in _unacked

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=self.timeout)
        if self.context is None:
            return sock
        try:
            return self.context.wrap_socket(sock, server_hostname=self.server_name)
        except OSError:
            sock.close()
            raise

    def _written(self, nbytes: int, events: int) -> int:
        if not ACK_TRACKING:
            return events
        self._bytes += nbytes
        self._unacked.append((self._bytes, events))
        self._pending += events
        return self.settle()

    def settle(self) -> int:
        """Events acknowledged since the last call; a connection found dead loses the rest."""
        if not self._unacked or self._sock is None:
            return 0
        try:
            state = self._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
            queued = struct.unpack("i", fcntl.ioctl(self._sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            state, queued = 0, 0
        if state not in (TCP_ESTABLISHED, TCP_CLOSE_WAIT):
            self.close()
            return 0
        acked = self._bytes - queued
        done = 0
        while self._unacked and self._unacked[0][0] <= acked:
            done += self._unacked.popleft()[1]
        self._pending -= done
        return done

    def unconfirmed(self) -> int:
        return self._pending

    def close(self) -> None:
        self.lost += self._pending
        self._unacked.clear()
        self._pending = self._bytes = 0
        super().close()


class FileTransport(_Delivered):
    """Appends lines to a file (reopened after an error, so a rotated file is recreated)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def open(self) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def send(self, data: bytes, events: int) -> int:
        self.open()
        assert self._fd is not None
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError:
            self.close()
            raise
        return events

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class HttpTransport(_Delivered):
    """POST of a JSON body; 5xx and 429 are retried, other 4xx are not."""

    def __init__(self, spec: OutputSpec) -> None:
        self.url, self.timeout = spec.url, spec.timeout
        self.context = tls_context(spec) if spec.url.startswith("https:") else None

    def open(self) -> None:
        """Each POST connects anew."""

    def send(self, data: bytes, events: int) -> int:
        request = urllib.request.Request(self.url, data=data, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "maltrail-ng"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            if exc.code >= 500 or exc.code == 429:
                raise OSError(f"HTTP {exc.code}") from None
            raise PermanentError(f"HTTP {exc.code}") from None
        return events

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
