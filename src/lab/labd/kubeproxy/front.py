"""``GET /k8s/…`` over HTTP/1.1 read and answered on the TLS connection itself, before hypercorn.

A profile of labd proxying GETs (32 clients, its own upstream client already in) had
hypercorn's per-request machinery at about a third of labd's CPU: reading the request through
h11 events, a task and cancel scopes per request, the keep-alive timer task restarted per
request, its answer path turning each ASGI message into h11 events. The proxy itself is an ASGI
app that never needed any of it, so for the one request shape that makes up kubectl's and
controllers' load, this front builds the ASGI scope itself and calls the same
:class:`lab.labd.kubeproxy.proxy.KubeProxy` (certificate, RBAC, audit, request id: all of it
stays there, in one place).

:func:`parse_head` is the sans-IO part: it accepts only a strict subset of HTTP/1.1, a
``GET /k8s/…`` with one Host, no body and no upgrade, a head under :data:`MAX_HEAD`. Anything
else, however odd (uploads, exec/attach/port-forward upgrades, other paths, malformed heads),
goes to hypercorn with every byte read so far pushed back (:class:`PushedBackTLS`), and
hypercorn serves the connection from there to its end. HTTP/2 connections never come here.

The answer: a head with a Content-Length leaves with its body; without one the body is
chunked, piece by piece as the proxy sends it (watches). An answer the proxy leaves unfinished
(the API server went away mid-body) closes the connection, so the client sees it cut.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import trio
from attrs import frozen

from lab.labd.kubeproxy.calls import ASGIApp
from lab.runtime.front import PushedBackTLS
from lab.runtime.httphead import FIELD, HAND_OFF, HandOff, HttpDate, head_end

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
"""A longer request head goes to hypercorn (whose own limit, h11's 16 KiB, then answers it)."""
READ_SIZE = 65536

_REQUEST_LINE = re.compile(rb"GET (/k8s/[!-~]*) HTTP/1\.1\r\n")
# RFC 9110 token names; values of visible characters, spaces, tabs and obs-text.
_REFUSED = frozenset({b"content-length", b"transfer-encoding", b"upgrade", b"expect"})
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


@frozen
class Head:
    """One ``GET /k8s/…`` request head, ``size`` bytes long."""

    target: bytes
    headers: list[tuple[bytes, bytes]]
    size: int
    close: bool


def parse_head(buf: bytes | bytearray) -> Head | HandOff | None:
    """The request at the start of ``buf``: a :class:`Head`, :data:`HAND_OFF`, or ``None``
    when its head is not complete yet."""
    if not b"GET /k8s/".startswith(bytes(buf[:9])):
        return HAND_OFF
    end = head_end(buf, MAX_HEAD)
    if not isinstance(end, int):
        return end
    line = _REQUEST_LINE.match(buf)
    if line is None:
        return HAND_OFF
    pos, stop = line.end(), end + 2
    hosts, close = 0, False
    headers: list[tuple[bytes, bytes]] = []
    while pos < stop:
        field = FIELD.match(buf, pos, stop)
        if field is None:
            return HAND_OFF
        pos = field.end()
        name, value = field.group(1).lower(), field.group(2)
        if name == b"host":
            hosts += 1
        elif name in _REFUSED:
            return HAND_OFF
        elif name == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"upgrade" in tokens:
                return HAND_OFF
            close = close or b"close" in tokens
        headers.append((name, value))
    if hosts != 1:
        return HAND_OFF
    return Head(target=line.group(1), headers=headers, size=end + 4, close=close)


class _Connection:
    __slots__ = ("buf", "idle", "scope")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.idle = True
        self.buf = bytearray()


class _Exchange:
    """One request's ASGI ``receive`` and ``send`` over the connection."""

    __slots__ = (
        "asked",
        "chunked",
        "close",
        "conn",
        "date",
        "done",
        "left",
        "pending",
        "socket",
        "stream",
        "wrote",
    )

    def __init__(
        self,
        stream: trio.SSLStream[Any] | PushedBackTLS,
        socket: trio.socket.SocketType,
        conn: _Connection,
        date: bytes,
        close: bool,
    ) -> None:
        self.stream = stream
        self.socket = socket
        self.conn = conn
        self.date = date
        self.close = close
        self.asked = False
        self.pending: bytes | None = None  # the head, waiting for the body's first piece
        self.chunked = False
        self.left = -1  # bytes of a Content-Length body still to send; -1: not that framing
        self.done = False
        self.wrote = False

    async def fail(self) -> None:
        """The proxy ended without a whole answer: a 500 when nothing is out yet (what
        hypercorn answers), then the connection closes either way."""
        self.close = True
        if not self.wrote:
            self.pending = None
            self._start(500, [(b"content-length", b"0")])
            self.done = False
            await self.send({"type": "http.response.body", "body": b""})

    async def receive(self) -> dict[str, Any]:
        if not self.asked:
            self.asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        # Then only the client leaving is news. Bytes it sends meanwhile are its next request:
        # kept (up to one head's worth; beyond that it waits for this answer to end).
        conn = self.conn
        while len(conn.buf) < MAX_HEAD:
            try:
                # Most answers end before the client sends anything, and this wait is then
                # cancelled: waiting on the socket itself skips the TLS read's failed attempts
                # (two exceptions raised and unwound). Records already buffered by the TLS
                # stream are not news here: the next request is read after this answer.
                await trio.lowlevel.wait_readable(self.socket)
                data = await self.stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.close = True
                return {"type": "http.disconnect"}
            conn.buf += data
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(self, message: Any) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._start(int(message["status"]), message.get("headers") or [])
            return
        if kind != "http.response.body" or self.done:
            return
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        out = self.pending or b""
        self.pending = None
        if self.chunked:
            if body:
                out += b"%x\r\n%s\r\n" % (len(body), body)
            if not more:
                out += b"0\r\n\r\n"
        elif self.left >= 0:
            if len(body) > self.left:
                self.close = True
                raise RuntimeError("an answer body longer than its Content-Length")
            self.left -= len(body)
            out += body
        if not more:
            # Shorter than it said: not done, so the connection closes and the client sees
            # the cut.
            self.done = self.left <= 0
        if out:
            self.wrote = True
            await self.stream.send_all(out)

    def _start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
        length = -1
        dated = False
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"content-length":
                # As read and checked by the upstream client: digits, repeats agreeing.
                length = int(value.split(b",")[0])
                continue
            if lowered == b"connection":
                self.close = self.close or b"close" in value.lower()
                continue
            dated = dated or lowered == b"date"
            lines.append(b"%s: %s\r\n" % (name, value))
        if length >= 0:
            self.left = length
            lines.append(b"content-length: %d\r\n" % length)
        elif status >= 200 and status not in (204, 304):
            self.chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        if not dated:
            lines.append(b"date: %s\r\n" % self.date)
        if self.close:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        self.pending = b"".join(lines)


class KubeFront:
    """Serves ``GET /k8s/…`` on HTTP/1.1 TLS connections through ``proxy`` (the ASGI app of
    :class:`lab.labd.kubeproxy.proxy.KubeProxy`); see the module docstring.

    ``idle_timeout`` bounds the wait for each request's whole head (0: no limit), from the end
    of the previous answer (or the handshake's), as hypercorn's keep-alive timeout does.
    """

    def __init__(self, proxy: ASGIApp, *, idle_timeout: float) -> None:
        self.proxy = proxy
        self.idle_timeout = idle_timeout or float("inf")
        self._connections: set[_Connection] = set()
        self._closing = False
        self._date = HttpDate()

    def close_idle(self) -> None:
        """The server is shutting down: close connections waiting for a request now, and the
        others once their answer is out."""
        self._closing = True
        for conn in self._connections:
            if conn.idle:
                conn.scope.cancel()

    async def serve(
        self,
        stream: trio.SSLStream[Any] | PushedBackTLS,
        tls: dict[str, Any],
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
    ) -> trio.abc.Stream | None:
        """Answer ``GET /k8s/…`` requests until the client leaves, goes idle too long, asks
        to close, or sends another request (then: the stream for hypercorn). Never raises for
        a broken connection; on cancellation the connection is closed."""
        conn = _Connection()
        self._connections.add(conn)
        try:
            with conn.scope:
                handed = await self._serve(stream, conn, tls, client, server)
                if handed is not None:
                    return handed
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._connections.discard(conn)
        await trio.aclose_forcefully(stream)
        return None

    async def _serve(
        self,
        stream: trio.SSLStream[Any] | PushedBackTLS,
        conn: _Connection,
        tls: dict[str, Any],
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
    ) -> trio.abc.Stream | None:
        buf = conn.buf
        # A front before this one (the agents') may hand on what it read as a PushedBackTLS.
        tls_stream = stream.tls_stream if isinstance(stream, PushedBackTLS) else stream
        socket = tls_stream.transport_stream.socket
        while True:
            request = parse_head(buf)
            # The whole head must arrive within the idle timeout, however it trickles in.
            deadline = trio.current_time() + self.idle_timeout
            while request is None:
                if self._closing and not buf:
                    return None
                conn.idle = not buf
                with trio.move_on_at(deadline) as timer:
                    data = await stream.receive_some(READ_SIZE)
                conn.idle = False
                if timer.cancelled_caught or not data:
                    return None  # idle too long, or the client left (or closed mid-head)
                buf += data
                request = parse_head(buf)
            if isinstance(request, HandOff):
                return PushedBackTLS(stream, bytes(buf))
            del buf[: request.size]
            exchange = _Exchange(
                stream, socket, conn, self._date.now(), request.close or self._closing
            )
            path, _, query = request.target.partition(b"?")
            scope = {
                "type": "http",
                "asgi": {"version": "3.0", "spec_version": "2.3"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "https",
                "path": unquote(path.decode("ascii")),
                "raw_path": path,
                "query_string": query,
                "root_path": "",
                "headers": request.headers,
                "client": client,
                "server": server,
                # A copy per request: the proxy must not see another request's edits.
                "extensions": {"tls": {**tls, "client_cert_chain": list(tls["client_cert_chain"])}},
            }
            try:
                await self.proxy(scope, exchange.receive, exchange.send)
            except Exception:
                log.exception("a /k8s request failed in the front")
                await exchange.fail()
                return None
            if not exchange.done:
                await exchange.fail()  # an answer cut short: the client must see the cut
                return None
            if exchange.close:
                return None
