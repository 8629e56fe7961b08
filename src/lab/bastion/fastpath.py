"""``GET /dispatch`` answered on the connection itself, before hypercorn (a connection front).

A PXE boot storm is mostly ``/dispatch``, and a profile of the bastion under that load showed
hypercorn's per-request machinery (h11 events, a task and a cancel scope per request, the
keep-alive timer task restarted per request, three ASGI sends) at over half of the CPU of a
request; the answer itself (a cached row and a cached script) was under a fifth.

:func:`parse_head` is the sans-IO part: it reads one request head and says whether it is a
``/dispatch`` this front answers (:class:`Dispatch`), whether more bytes are needed (``None``),
or whether the connection goes to hypercorn (:data:`HAND_OFF`). It accepts only a strict
subset of HTTP/1.1, ``GET /dispatch?…`` with a valid ``mac``, a Host, no body and no upgrade;
anything else, however odd, is hypercorn's to answer (with the app's errors), from the first
byte of the request it did not take. :class:`DispatchFront` is the trio driver.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import trio
from attrs import frozen

from lab.bastion.validate import normalize_mac
from lab.errors import Invalid
from lab.runtime.front import PushedBack
from lab.runtime.httphead import FIELD, HAND_OFF, HandOff, HttpDate, head_end
from lab.runtime.logs import REQUEST_ID_HEADER, begin_request
from lab.runtime.metrics import BastionMetrics

MAX_HEAD = 8192
"""A longer head (its blank line included) goes to hypercorn (whose own limit then answers it),
whether it arrives whole or in pieces."""

Headers = list[tuple[bytes, bytes]]
Answer = Callable[[str], Awaitable[tuple[int, Headers, bytes]]]
"""``answer(mac) -> (status, headers, body)``: what the app would answer to ``/dispatch``."""


@frozen
class Dispatch:
    """One ``GET /dispatch`` request head, ``size`` bytes long."""

    mac: str
    size: int
    close: bool
    request_id: str | None


_PREFIX = b"GET /dispatch?"
_REQUEST_LINE = re.compile(rb"GET /dispatch\?([!-~]*) HTTP/1\.1\r\n")
# RFC 9110 token names; values of visible characters, spaces, tabs and obs-text.
_REFUSED = frozenset({b"content-length", b"transfer-encoding", b"upgrade", b"expect"})


def parse_head(buf: bytes | bytearray) -> Dispatch | HandOff | None:
    """The request at the start of ``buf``: a :class:`Dispatch`, :data:`HAND_OFF`, or ``None``
    when its head is not complete yet."""
    if not buf.startswith(_PREFIX[: len(buf)]):
        return HAND_OFF
    end = head_end(buf, MAX_HEAD)
    if not isinstance(end, int):
        return end
    line = _REQUEST_LINE.match(buf)
    if line is None:
        return HAND_OFF
    pos, stop = line.end(), end + 2
    host, close, rid = 0, False, None
    while pos < stop:
        field = FIELD.match(buf, pos, stop)
        if field is None:
            return HAND_OFF
        pos = field.end()
        name = field.group(1).lower()
        if name == b"host":
            host += 1
        elif name in _REFUSED:
            return HAND_OFF
        elif name == b"connection":
            tokens = {t.strip().lower() for t in field.group(2).split(b",")}
            if b"upgrade" in tokens:
                return HAND_OFF
            close = close or b"close" in tokens
        elif name == b"x-request-id":
            rid = field.group(2).decode("latin-1")
    if host != 1:
        return HAND_OFF
    mac = first_mac(line.group(1))
    if mac is None:
        return HAND_OFF
    return Dispatch(mac=mac, size=end + 4, close=close, request_id=rid)


def first_mac(query: bytes) -> str | None:
    """The normalised first ``mac`` of a query string (as ``request.args`` reads it), if valid;
    a missing or bad one is the app's to refuse with a 400 naming the field."""
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key == "mac":
            try:
                return normalize_mac(value)
            except Invalid:
                return None
    return None


_RID = REQUEST_ID_HEADER.lower().encode()


class _Connection:
    __slots__ = ("idle", "scope")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.idle = True


class DispatchFront:
    """The bastion's :class:`lab.runtime.front.ConnectionFront`: answers ``/dispatch`` through
    ``answer`` (the app's own answer, see :class:`lab.bastion.app.DispatchFastPath`), with a
    request id and a latency observation like :class:`lab.bastion.app.Observed`, and hands any
    other request's connection to hypercorn.

    ``idle_timeout`` bounds the wait for each request's whole head (0: no limit), from the end
    of the previous answer (or the connection's start), as hypercorn's keep-alive timeout does.
    """

    def __init__(self, answer: Answer, metrics: BastionMetrics, *, idle_timeout: float) -> None:
        self.answer = answer
        self.metrics = metrics
        self.idle_timeout = idle_timeout or float("inf")
        self._connections: set[_Connection] = set()
        self._closing = False
        self._date = HttpDate()

    def close_idle(self) -> None:
        self._closing = True
        for conn in self._connections:
            if conn.idle:
                conn.scope.cancel()

    async def serve(self, stream: trio.SocketStream) -> trio.abc.Stream | None:
        """Answer ``/dispatch`` requests until the client leaves, goes idle too long, asks to
        close, or sends another request (then: the stream for hypercorn). Never raises for a
        broken connection; on cancellation the connection is closed."""
        conn = _Connection()
        self._connections.add(conn)
        try:
            with conn.scope:
                handed = await self._serve(stream, conn)
                if handed is not None:
                    return handed
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._connections.discard(conn)
        await trio.aclose_forcefully(stream)
        return None

    async def _serve(self, stream: trio.SocketStream, conn: _Connection) -> trio.abc.Stream | None:
        buf = bytearray()
        while True:
            request = parse_head(buf)
            # The whole head must arrive within the idle timeout, however it trickles in.
            deadline = trio.current_time() + self.idle_timeout
            while request is None:
                if self._closing and not buf:
                    return None
                conn.idle = not buf
                with trio.move_on_at(deadline) as timer:
                    data = await stream.receive_some(65536)
                conn.idle = False
                if timer.cancelled_caught or not data:
                    return None  # idle too long, or the client left (or closed mid-head)
                buf += data
                request = parse_head(buf)
            if request is HAND_OFF:
                return PushedBack(stream, bytes(buf))
            del buf[: request.size]
            started = time.perf_counter()
            rid = begin_request(request.request_id).encode()
            status, headers, body = await self.answer(request.mac)
            self.metrics.observe_request("/dispatch", "GET", status, time.perf_counter() - started)
            close = request.close or self._closing
            head = [b"HTTP/1.1 %d \r\n" % status]
            head += [b"%s: %s\r\n" % (k, v) for k, v in headers if k != b"content-length"]
            head.append(b"content-length: %d\r\n" % len(body))
            head.append(b"date: %s\r\n%s: %s\r\n" % (self._date.now(), _RID, rid))
            if close:
                head.append(b"connection: close\r\n")
            head.append(b"\r\n")
            await stream.send_all(b"".join(head) + body)
            if close:
                return None


__all__ = ["HAND_OFF", "Dispatch", "DispatchFront", "HandOff", "first_mac", "parse_head"]
