"""The blocking I/O under the fast ``labctl exec`` (:mod:`lab.cli.exec_fast`): one TLS
WebSocket to labd on a non-blocking socket, stdout and stderr that never block the connection,
and the signals labctl forwards, each waking one :func:`select.poll`.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import ssl
import time
from collections import deque
from typing import Any

from lab.client import wscore
from lab.client.wserrors import (
    ABNORMAL,
    handshake_failed,
    rejected,
    timed_out,
    tls_failed,
    unreachable,
)
from lab.runtime.output import write_all

CONNECT_TIMEOUT = 10.0  # lab.client.wsclient.CONNECT_TIMEOUT
DISCONNECT_TIMEOUT = 2.0
# The largest message labd sends: a data frame's header and lab.proto's MAX_PAYLOAD.
MAX_MESSAGE = 1024 * 1024 + 13
RECEIVE_BATCH = 1024 * 1024  # bytes one receive() takes off the socket at most
_PROTOCOL_ERROR = 1002
_TOO_BIG = 1009


class Closed(Exception):
    """The connection ended: ``code`` and ``reason`` as a close frame said (1006: none)."""

    def __init__(self, code: int, reason: str | None) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class Connection:
    """One TLS WebSocket to labd on a non-blocking socket: whole messages in, frames out."""

    def __init__(self, sock: ssl.SSLSocket, rest: bytes) -> None:
        self.sock = sock
        self.reader = wscore.FrameReader(MAX_MESSAGE)
        self.reader.feed(rest)
        self.eof = False

    @classmethod
    def open(cls, server: str, url: str, context: ssl.SSLContext) -> Connection:
        """TCP, TLS and the upgrade within :data:`CONNECT_TIMEOUT`; LabErrors as
        :func:`lab.client.wsclient.connect` raises them."""
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or 443
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        deadline = time.monotonic() + CONNECT_TIMEOUT
        raw: socket.socket | None = None
        try:
            raw = _tcp(host, port, deadline)
            sock = context.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False)
            raw = sock
            sock.settimeout(_left(deadline))
            sock.do_handshake()
            handshake = wscore.ClientHandshake(
                host if port in (80, 443) else f"{host}:{port}", path
            )
            sock.sendall(handshake.request())
            while True:
                sock.settimeout(_left(deadline))
                rest = handshake.receive(sock.recv(65536))
                if rest is not None:
                    break
            sock.setblocking(False)
            return cls(sock, rest)
        except BaseException as exc:
            if raw is not None:
                raw.close()
            if isinstance(exc, wscore.Rejected):
                raise rejected(exc.status, exc.body) from None
            if isinstance(exc, TimeoutError):
                raise timed_out(server, CONNECT_TIMEOUT) from None
            if isinstance(exc, wscore.WebSocketError):
                raise handshake_failed(server, exc) from None
            if isinstance(exc, ssl.SSLError):
                raise tls_failed(server, exc) from None
            if isinstance(exc, OSError):
                raise unreachable(server, exc) from None
            raise

    def send(self, opcode: int, payload: bytes) -> None:
        """Send one frame, waiting while the socket cannot take more. Once labd's end of
        the connection was read (a close, EOF), nothing sent can reach it: nothing is sent
        (the TLS layer would raise once it saw the EOF)."""
        if self.eof:
            return
        view = memoryview(wscore.frame(opcode, payload))
        while view:
            try:
                view = view[self.sock.send(view) :]
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError) as exc:
                # Wait for what TLS wants; not both, or incoming data would make this spin.
                want = select.POLLIN if isinstance(exc, ssl.SSLWantReadError) else select.POLLOUT
                poller = select.poll()
                poller.register(self.sock, want)
                poller.poll()

    def send_text(self, data: bytes) -> None:
        self.send(wscore.TEXT, data)

    def receive(self) -> list[tuple[int, bytes]]:
        """Whole messages from what the socket has now (none: nothing complete yet); answers
        pings; raises :class:`Closed` when the connection ended."""
        if self.eof:
            raise Closed(ABNORMAL, None)
        try:
            # recv returns one TLS record (16 KiB) at most: take every record already here
            # (up to RECEIVE_BATCH) in this call, not one per trip through the caller's loop.
            taken = 0
            while taken < RECEIVE_BATCH:
                data = self.sock.recv(262144)
                if not data:
                    self.eof = True
                    break
                self.reader.feed(data)
                taken += len(data)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            pass
        except OSError:
            self.eof = True
        out: list[tuple[int, bytes]] = []
        try:
            while (item := self.reader.next()) is not None:
                opcode, payload = item
                if opcode == wscore.PING:
                    self.send(wscore.PONG, payload)
                elif opcode == wscore.CLOSE:
                    code, reason = wscore.parse_close(payload)
                    self._reply_close(code)
                    self.eof = True
                    return self._then_closed(out, code, reason or None)
                elif opcode != wscore.PONG:
                    out.append(item)
        except wscore.TooBig:
            text = f"Exceeded maximum message size: {self.reader.max_message} bytes"
            self._reply_close(_TOO_BIG, text)
            self.eof = True
            return self._then_closed(out, _TOO_BIG, text)
        except wscore.WebSocketError as exc:
            self._reply_close(_PROTOCOL_ERROR, str(exc))
            self.eof = True
            return self._then_closed(out, _PROTOCOL_ERROR, str(exc))
        if self.eof and not out:
            raise Closed(ABNORMAL, None)
        return out

    def _then_closed(
        self, out: list[tuple[int, bytes]], code: int, reason: str | None
    ) -> list[tuple[int, bytes]]:
        self.close_reason = (code, reason)
        if out:
            return out
        raise Closed(code, reason)

    def _reply_close(self, code: int, reason: str = "") -> None:
        with contextlib.suppress(OSError):
            self.send(wscore.CLOSE, _close_payload(code, reason))

    def close(self, code: int | None = None) -> None:
        """Say goodbye (``code``) and wait for labd's close, at most DISCONNECT_TIMEOUT."""
        try:
            if code is not None and not self.eof:
                self.send(wscore.CLOSE, _close_payload(code))
                deadline = time.monotonic() + DISCONNECT_TIMEOUT
                poller = select.poll()
                poller.register(self.sock, select.POLLIN)
                while not self.eof and time.monotonic() < deadline:
                    if not self.sock.pending():
                        poller.poll(max(1, int(_left(deadline) * 1000)))
                    try:
                        self.receive()
                    except Closed:
                        break
        except (OSError, Closed):
            pass
        finally:
            self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()


def _close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()[:123]


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _tcp(host: str, port: int, deadline: float) -> socket.socket:
    """A connected TCP socket to ``host``, trying each address (trio's words when all fail)."""
    addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    errors: list[OSError] = []
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(_left(deadline))
            sock.connect(address)
            return sock
        except TimeoutError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            errors.append(exc)
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    message = f"all attempts to connect to {shown} failed"
    raise OSError(message) from ExceptionGroup(message, errors) if errors else None


class Output:
    """stdout and stderr in arrival order. A write that may block (no room, or more than
    PIPE_BUF bytes) goes to a thread, so a stdout nobody reads blocks neither the connection
    (labd's pings are answered) nor Ctrl-C; :meth:`done` says how many bytes were written
    since the last call (the credit to give back)."""

    def __init__(self) -> None:
        self._written = 0
        # Made on the first write that may block: most runs need neither it nor threading.
        self._writer: _Writer | None = None

    def write(self, fd: int, data: bytes) -> None:
        if self._writer is None:
            if len(data) <= select.PIPE_BUF and _has_room(fd):
                write_all(fd, data)  # room for PIPE_BUF bytes: this write cannot block
                self._written += len(data)
                return
            self._writer = _Writer()
        self._writer.put(fd, data)

    @property
    def wakeup_fd(self) -> int:
        """Readable when the thread wrote something (-1: no thread)."""
        return self._writer.wake_r if self._writer is not None else -1

    @property
    def pending(self) -> bool:
        return self._writer is not None and self._writer.pending

    def done(self) -> int:
        """Bytes written since the last call; raises what a write raised (BrokenPipeError)."""
        written, self._written = self._written, 0
        if self._writer is not None:
            written += self._writer.take()
        return written


class _Writer:
    """The thread that writes what may block, in order; it counts what it wrote and wakes
    the main loop through a pipe after each write."""

    def __init__(self) -> None:
        import threading

        self._queue: deque[tuple[int, bytes]] = deque()
        self._written = 0
        self._busy = False
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._more = threading.Condition(self._lock)
        self.wake_r, self._wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self._wake_w, False)
        threading.Thread(target=self._run, name="labctl-stdout", daemon=True).start()

    def put(self, fd: int, data: bytes) -> None:
        with self._lock:
            if self._error is not None:
                raise self._error
            self._queue.append((fd, data))
            self._more.notify()

    @property
    def pending(self) -> bool:
        with self._lock:
            return bool(self._queue) or self._busy

    def take(self) -> int:
        with contextlib.suppress(BlockingIOError):
            os.read(self.wake_r, 4096)
        with self._lock:
            written, self._written = self._written, 0
            if self._error is not None:
                raise self._error
        return written

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._more.wait()
                fd, data = self._queue.popleft()
                self._busy = True
            error: BaseException | None = None
            try:
                write_all(fd, data)
            except BaseException as exc:  # handed to the main thread, which raises it
                error = exc
            with self._lock:
                self._busy = False
                if error is None:
                    self._written += len(data)
                else:
                    self._error = error
                    self._queue.clear()
            # A full pipe: the main thread has wake-ups to read already.
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b".")
            if error is not None:
                return


def _has_room(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return bool(poller.poll(0))


class Signals:
    """SIGINT, SIGTERM, SIGHUP (and SIGWINCH for a tty) caught while the session runs: each
    is noted and wakes :func:`select.poll` through :attr:`fd`."""

    def __init__(self, tty: bool) -> None:
        self.wanted = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
        if tty:
            self.wanted.append(signal.SIGWINCH)
        self.received: list[int] = []
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._old: dict[int, Any] = {}
        self._old_fd = -1

    def __enter__(self) -> Signals:
        self._old_fd = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        for signum in self.wanted:
            self._old[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *_: object) -> None:
        for signum, old in self._old.items():
            signal.signal(signum, old)
        signal.set_wakeup_fd(self._old_fd)
        self._read.close()
        self._write.close()

    def _note(self, signum: int, _: object) -> None:
        self.received.append(signum)

    @property
    def fd(self) -> int:
        return self._read.fileno()

    def take(self) -> list[int]:
        try:
            while self._read.recv(4096):
                pass
        except BlockingIOError:
            pass
        taken, self.received = self.received, []
        return taken


def wait_readable(fds: list[int]) -> set[int]:
    """The descriptors of ``fds`` ready to read (or closed), waiting as long as it takes."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    while True:
        try:
            return {fd for fd, _ in poller.poll()}
        except InterruptedError:  # pragma: no cover - PEP 475 retries poll itself
            continue


__all__ = ["Closed", "Connection", "Output", "Signals", "wait_readable"]
