"""Kept-alive HTTP/1.1 connections to one API server, and the answers read over them.

:meth:`Pool.send` sends one request (its body streamed when it has one) and returns the
:class:`Answer` once its head is in; the caller reads the body with :meth:`Answer.read` and
always calls :meth:`Answer.aclose`, which puts the connection back for the next request when
the answer ended cleanly and closes it otherwise (a cancelled watch, a broken body).

- At most ``size`` connections are open (watches hold theirs), at most ``keep`` wait idle;
  a request beyond ``size`` waits for one to come back.
- An idle connection that turned readable (the API server closed it, or sent bytes nobody
  asked for) or has idled for :data:`IDLE_TTL` seconds is closed rather than used; a bodiless
  GET, HEAD or OPTIONS whose reused connection breaks before any answer byte is sent once
  more on a fresh connection (the API server closed it idle as the request left).
- Every failure to reach the API server, or an answer that is no HTTP, is
  :class:`lab.errors.Unavailable` (``upstream_unreachable``); bounding the wait for a head is
  the caller's (the proxy's ``HEAD_TIMEOUT``).
"""

from __future__ import annotations

import ssl
import time
from collections import deque
from collections.abc import AsyncIterable, Sequence

import trio

from lab.errors import Unavailable
from lab.labd.kubeproxy import h1

IDLE_TTL = 30.0
"""Seconds an idle connection is kept (the API server's own idle timeout is 90 s)."""
READ_SIZE = 65536
_RETRIED = frozenset({"GET", "HEAD", "OPTIONS"})
_BROKEN = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h1.BadResponse)


class _Conn:
    __slots__ = ("idle_since", "socket", "stream")

    def __init__(self, stream: trio.abc.Stream, socket: trio.socket.SocketType) -> None:
        self.stream = stream
        self.socket = socket
        self.idle_since = 0.0


class Pool:
    """Connections to ``host:port`` (TLS with ``tls`` when given, SNI and checks on ``host``).

    ``name`` is what errors call the API server (the cluster's name).
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        *,
        size: int = 256,
        keep: int = 64,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.tls = tls
        self.keep = keep
        self._slots = trio.Semaphore(size)
        self._idle: deque[_Conn] = deque()
        self._closed = False
        self.opened = 0
        """Connections opened so far (tests read it to see reuse)."""

    async def send(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: AsyncIterable[bytes] | None = None,
    ) -> Answer:
        """Send a request and read its answer's head.

        With ``body``, the headers say how it is framed: with a ``content-length`` the bytes
        go as they come (the caller vouches for their count), without one they are chunked
        (``transfer-encoding: chunked`` is added). Cancellation closes the connection.
        """
        head_only = method == "HEAD"
        if body is not None and not any(n == b"content-length" for n, _ in headers):
            headers = [*headers, (b"transfer-encoding", b"chunked")]
            chunked = True
        else:
            chunked = False
        try:
            head = h1.request_head(method, target, headers)
        except h1.BadRequestHead as exc:
            raise Unavailable(
                f"cluster {self.name}: the request cannot be sent ({exc})",
                details={"reason": "upstream_request"},
            ) from None
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            await self._slots.acquire()
        try:
            conn, reused = self._take_idle(), True
            if conn is None:
                conn, reused = await self._connect(), False
            try:
                return await self._exchange(conn, head, body, chunked, head_only)
            except _BROKEN as exc:
                if not (reused and body is None and method in _RETRIED and _untouched(exc)):
                    raise self._unreachable(exc) from exc
            conn = await self._connect()
            try:
                return await self._exchange(conn, head, body, chunked, head_only)
            except _BROKEN as exc:
                raise self._unreachable(exc) from exc
        except BaseException:
            self._slots.release()
            raise

    async def _exchange(
        self,
        conn: _Conn,
        head: bytes,
        body: AsyncIterable[bytes] | None,
        chunked: bool,
        head_only: bool,
    ) -> Answer:
        reader = h1.ResponseReader(head_request=head_only)
        stream = conn.stream
        try:
            if body is None:
                await stream.send_all(head)
            else:
                await stream.send_all(head)
                async for piece in body:
                    if piece:
                        await stream.send_all(h1.chunk(piece) if chunked else piece)
                if chunked:
                    await stream.send_all(h1.LAST_CHUNK)
            received = False
            try:
                while True:
                    event = reader.next_event()
                    if event is h1.NEED_DATA:
                        if not received:
                            # The answer cannot be here yet: wait on the socket itself, not
                            # through the TLS read's failed attempts (two exceptions raised and
                            # unwound per request). Anything the TLS stream buffered before the
                            # request was sent is no part of the answer and fails it below.
                            await trio.lowlevel.wait_readable(conn.socket)
                        data = await stream.receive_some(READ_SIZE)
                        received = received or bool(data)
                        reader.feed(data)
                        continue
                    if isinstance(event, h1.Head):
                        return Answer(self, conn, reader, event)
                    raise h1.BadResponse("a body before the answer head")  # pragma: no cover
            except _BROKEN as exc:
                raise _Broken(received) from exc
        except BaseException:
            await _close(conn)
            raise

    def _take_idle(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            try:
                stale = now - conn.idle_since > IDLE_TTL or conn.socket.is_readable()
            except OSError:
                stale = True
            if not stale:
                return conn
            _close_now(conn)
        return None

    async def _connect(self) -> _Conn:
        try:
            tcp = await trio.open_tcp_stream(self.host, self.port)
        except OSError as exc:
            raise self._unreachable(exc) from exc
        self.opened += 1
        if self.tls is None:
            return _Conn(tcp, tcp.socket)
        stream = trio.SSLStream(tcp, self.tls, server_hostname=self.host, https_compatible=True)
        try:
            await stream.do_handshake()
        except BaseException as exc:
            await trio.aclose_forcefully(stream)
            if isinstance(exc, trio.BrokenResourceError | OSError):
                raise self._unreachable(exc) from exc
            raise
        return _Conn(stream, tcp.socket)

    def _release(self, conn: _Conn | None) -> None:
        """Give back an answer's slot, and its connection when it can carry another request."""
        self._slots.release()
        if conn is None:
            return
        if self._closed or len(self._idle) >= self.keep:
            _close_now(conn)
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def close(self) -> None:
        """Close the idle connections; those in use close when their answer does."""
        self._closed = True
        while self._idle:
            _close_now(self._idle.pop())

    def _unreachable(self, exc: BaseException) -> Unavailable:
        cause = exc.__cause__ if isinstance(exc, _Broken) and exc.__cause__ else exc
        cause = cause.__cause__ or cause
        return Unavailable(
            f"cluster {self.name}: the API server at {self.host}:{self.port} "
            f"cannot be reached ({type(cause).__name__}: {cause})",
            details={"reason": "upstream_unreachable"},
        )


class _Broken(trio.BrokenResourceError):
    """Reading an answer failed; ``received`` says whether any byte of it had come."""

    def __init__(self, received: bool) -> None:
        super().__init__("the connection broke")
        self.received = received


def _untouched(exc: BaseException) -> bool:
    """Whether a failure came before any byte of the answer (a reused connection's death)."""
    if isinstance(exc, _Broken):
        return not exc.received
    return not isinstance(exc, h1.BadResponse)  # else the request could not be written


class Answer:
    """An API server's answer, head read; see :class:`Pool`."""

    __slots__ = ("_conn", "_pool", "_reader", "headers", "status")

    def __init__(self, pool: Pool, conn: _Conn, reader: h1.ResponseReader, head: h1.Head) -> None:
        self._pool = pool
        self._conn: _Conn | None = conn
        self._reader = reader
        self.status = head.status
        self.headers = head.headers

    async def read(self) -> bytes:
        """The body's next piece as it arrives, ``b""`` at its end. Raises Unavailable when
        the connection breaks or the body is malformed before its end."""
        conn, reader = self._conn, self._reader
        if conn is None:
            return b""
        try:
            while True:
                event = reader.next_event()
                if event is h1.NEED_DATA:
                    reader.feed(await conn.stream.receive_some(READ_SIZE))
                elif isinstance(event, bytes):
                    if event:
                        return event
                else:
                    return b""
        except _BROKEN as exc:
            raise Unavailable(
                f"cluster {self._pool.name}: the API server went away mid-answer "
                f"({type(exc).__name__}: {exc})",
                details={"reason": "upstream_unreachable"},
            ) from exc

    async def aclose(self) -> None:
        """Reuse or close the connection; call it exactly once, also after errors."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        reader = self._reader
        if reader.done and reader.keep_alive:
            self._pool._release(conn)
            return
        self._pool._release(None)
        await _close(conn)


def _close_now(conn: _Conn) -> None:
    # Without close_notify (the connection is dropped, not ended): closing the socket alone.
    conn.socket.close()


async def _close(conn: _Conn) -> None:
    with trio.CancelScope(shield=True):
        await trio.aclose_forcefully(conn.stream)
