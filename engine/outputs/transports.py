"""Delivering one encoded event: UDP datagram, TCP or TLS stream, file append, HTTP POST.

A transport raises OSError for a failure worth retrying (it reconnects on the next send) and
`PermanentError` for one that retrying cannot fix (an HTTP 4xx answer).

`ssl` and `urllib.request` (about 15 ms of imports) are imported by the transports that use them:
every sensor's aggregator imports this module, and its fork server does so on the start-up path.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import sys
import termios
from collections import deque
from typing import TYPE_CHECKING, Protocol

from engine.outputs.spec import OutputSpec

if TYPE_CHECKING:
    import ssl

# Linux's struct tcp_info (tcpi_state first, tcpi_bytes_acked since 4.1) and SIOCOUTQ (TIOCOUTQ's
# number): bytes written and not yet acknowledged by the peer.
ACK_TRACKING = sys.platform == "linux" and hasattr(socket, "TCP_INFO")
TCP_INFO_BYTES, TCPI_BYTES_ACKED = 128, 120
TCP_ESTABLISHED, TCP_CLOSE_WAIT = 1, 8


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
    import ssl  # noqa: PLC0415 - see the module's docstring

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

    An event counts as delivered once the receiver's kernel has acknowledged its last byte: after
    each write the stream position it ends at is noted (bytes acknowledged + SIOCOUTQ), and it is
    delivered once tcpi_bytes_acked reaches that position. When the connection dies (reset, or
    closed at exit) the events not yet acknowledged count as `lost`. Positions are TCP's bytes,
    so TLS is exact too. What the receiver's kernel acknowledged but its process never read stays
    invisible: at most its socket receive buffer. Where the kernel does not tell (not Linux, or
    older than 4.1) a write the kernel took counts as delivered."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext | None = None,
                 server_name: str = "") -> None:
        self.address, self.timeout, self.context = (host, port), timeout, context
        self.server_name = server_name or host
        self._unacked: deque[tuple[int, int]] = deque()  # (stream position of a write's end, its events)
        self._pending = 0  # events in _unacked
        self._acked = 0  # events acknowledged, not yet reported by `settle`

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
        position = self._position()
        if position is None:  # no way to know: the kernel took it
            return events
        self._unacked.append((position[2], events))
        self._pending += events
        return self.settle()

    def _position(self) -> tuple[int, int, int] | None:
        """(tcpi_state, bytes of the stream the receiver acknowledged, bytes written to it), in
        TCP's own bytes (TLS records included); None where the kernel does not tell."""
        sock = self._sock
        if not ACK_TRACKING or sock is None:
            return None
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BYTES)
            queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            return None
        if len(info) < TCP_INFO_BYTES:
            return None
        acked = struct.unpack_from("=Q", info, TCPI_BYTES_ACKED)[0]
        return info[0], acked, acked + queued

    def _acknowledged(self) -> bool:
        """Move what the receiver acknowledged from `_unacked` to `_acked`; False once the
        connection is dead (what it acknowledged before the reset still counts)."""
        position = self._position()
        if position is None:
            return False
        state, acked, _ = position
        while self._unacked and self._unacked[0][0] <= acked:
            events = self._unacked.popleft()[1]
            self._pending -= events
            self._acked += events
        return state in (TCP_ESTABLISHED, TCP_CLOSE_WAIT)

    def settle(self) -> int:
        """Events acknowledged since the last call; a connection found dead loses the rest."""
        if self._unacked and not self._acknowledged():
            self.close()
        done, self._acked = self._acked, 0
        return done

    def unconfirmed(self) -> int:
        return self._pending

    def close(self) -> None:
        if self._unacked:
            self._acknowledged()
        self.lost += self._pending
        self._unacked.clear()
        self._pending = 0
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
        import urllib.error  # noqa: PLC0415 - see the module's docstring
        import urllib.request  # noqa: PLC0415

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
