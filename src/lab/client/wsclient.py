"""labctl's WebSocket client for ``/ws/exec`` and ``/ws/logs``: the user's identity over mTLS.

trio-websocket gets its own SSLContext with ALPN ``http/1.1`` (httpx's negotiates h2) and an
explicit ``connect_timeout`` (a handshake the server drops otherwise waits 60 s). Failures are
mapped to :mod:`lab.errors` here, so commands see only LabErrors.

:class:`StreamSession` is the client half of the stream protocol (docs/protocol.md): it sends
the request naming the targets, then validates every frame (sequence, credit, ``exec-exit``
byte counts), grants output credit as the sink consumed, and tracks stdin credit.
"""

from __future__ import annotations

import contextlib
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import attrs
import trio
import trio_websocket

from lab.client.wserrors import (
    closed,
    handshake_failed,
    identity_ssl_context,
    lab_error,
    rejected,
    timed_out,
    tls_failed,
    unreachable,
    ws_url,
)
from lab.errors import LabError, Unavailable
from lab.proto import Channel, ProtocolError, decode, decode_data, encode
from lab.proto.frames import HEADER_SIZE, MAX_PAYLOAD
from lab.proto.messages import (
    DEFAULT_WINDOW,
    Credit,
    Error,
    ExecExit,
    ExecStarted,
    LogsEnd,
    Message,
    Ping,
    Pong,
    Request,
    Response,
    RpcError,
)
from lab.proto.requests import StreamRequest, to_request
from lab.proto.streams import InputStream, OutputStream, StreamTable, grown_window
from lab.runtime.tlsread import BULK_READ, RecordReadingStream

CONNECT_TIMEOUT = 10.0
DISCONNECT_TIMEOUT = 2.0


def identity_context(directory: Path | None = None) -> ssl.SSLContext:
    """The user's mTLS context (the current context's identity) with ALPN http/1.1 for
    WebSockets (:func:`lab.client.wserrors.identity_ssl_context`)."""
    from lab.client.contexts import identity_dir

    return identity_ssl_context(directory or identity_dir())


@asynccontextmanager
async def connect(
    server: str,
    path: str,
    ssl_context: ssl.SSLContext,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """Open ``path`` on labd; raises Unavailable, Unauthenticated or the rejection's LabError.

    Cancellation closes the connection (labd then cancels every stream it carried).

    We own the TLS stream and finish its handshake before trio-websocket sees it: its reader
    task sends the upgrade request, and a TLS error there (an untrusted labd, a revoked
    certificate) was lost in that task, so the caller waited out ``connect_timeout`` and was
    told labd did not answer. Owning it also closes the TCP connection trio-websocket 0.12
    keeps open when labd hangs up right after the close handshake.
    """
    url = ws_url(server, path)
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    opened = False  # from here on, an exception is the caller's own: raised as it is
    deadline = trio.current_time() + connect_timeout
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_at(deadline):
                stream = await _open_tls(host, port, ssl_context)
            try:
                with trio.fail_at(deadline):
                    ws = await trio_websocket.wrap_client_stream(
                        nursery,
                        # Whole buffers per read rather than one TLS record (lab.runtime.tlsread);
                        # trio-websocket only sends, receives and closes, whatever it names.
                        cast(Any, RecordReadingStream(stream)),
                        host if port in (80, 443) else f"{host}:{port}",
                        resource,
                        max_message_size=MAX_PAYLOAD + HEADER_SIZE,
                        receive_buffer_size=BULK_READ,
                    )
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
            opened = True
            try:
                yield ws
            finally:
                with trio.move_on_after(DISCONNECT_TIMEOUT):
                    await ws.aclose()
                await trio.aclose_forcefully(stream)
                nursery.cancel_scope.cancel()  # the reader task, if the close did not end it
    except BaseExceptionGroup as group:
        exc = _single(group)
        if opened or exc is group:
            raise exc from None
        raise _connect_failure(server, connect_timeout, exc) from None
    except BaseException as exc:
        if opened:
            raise
        raise _connect_failure(server, connect_timeout, exc) from None


async def _open_tls(
    host: str, port: int, context: ssl.SSLContext
) -> trio.SSLStream[trio.SocketStream]:
    """TCP and a finished TLS handshake to labd."""
    stream = await trio.open_ssl_over_tcp_stream(
        host, port, ssl_context=context, https_compatible=True
    )
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception of a nursery's group (the caller's own, or the reader task's); the
    group itself when it holds several."""
    leaves = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
    if len(leaves) == 1:
        return leaves[0]
    return group


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _connect_failure(server: str, timeout: float, exc: BaseException) -> BaseException:
    """What ``connect`` raises for ``exc``, a failure to open the connection: a LabError
    (anything else, a cancellation say, as it is)."""
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return rejected(exc.status_code, exc.body)
    if isinstance(exc, trio.TooSlowError | trio_websocket.ConnectionTimeout):
        return timed_out(server, timeout)
    if isinstance(exc, trio_websocket.HandshakeError):
        return _connect_error(server, exc.__cause__ or exc)
    if isinstance(exc, OSError | trio.BrokenResourceError) and not isinstance(exc, BrokenPipeError):
        return _connect_error(server, exc)
    return exc


def _connect_error(server: str, exc: BaseException) -> LabError:
    """The LabError for a connection that failed with ``exc`` (trio wraps TLS errors in
    BrokenResourceError)."""
    if isinstance(exc, trio.BrokenResourceError) and isinstance(exc.__cause__, ssl.SSLError):
        exc = exc.__cause__
    if isinstance(exc, ssl.SSLError):
        return tls_failed(server, exc)
    if isinstance(exc, OSError):
        return unreachable(server, exc)
    return handshake_failed(server, exc if isinstance(exc, Exception) else Exception(exc))


@attrs.define
class StreamState:
    """What the client knows about one stream of the session."""

    stream_id: int
    server: str
    input: InputStream
    stdin: OutputStream  # stdin frames within the credit labd granted
    pid: int | None = None
    exit: ExecExit | None = None
    ended: bool = False  # logs-end
    error: LabError | None = None
    credit_changed: trio.Event = attrs.Factory(trio.Event)

    @property
    def done(self) -> bool:
        return self.exit is not None or self.ended or self.error is not None


Sink = Callable[[StreamState, Channel, bytes], Awaitable[None]]


class StreamSession:
    """One ``/ws/exec`` or ``/ws/logs`` connection driven by the CLI."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.streams = StreamTable[StreamState]()
        self._lock = trio.Lock()

    async def send(self, item: Message | bytes) -> None:
        data = item if isinstance(item, bytes) else encode(item)
        async with self._lock:
            await self.ws.send_message(data)

    async def open_request(self, request: StreamRequest) -> list[StreamState]:
        """Send the request naming the targets; return the streams labd opened.

        Raises the LabError labd answered with (no server matches, invalid request)."""
        # keepalive: we answer labd's pings (and so may be ended when we stop answering).
        return await self._open(to_request(attrs.evolve(request, keepalive=True)))

    async def open(self, method: str, params: dict[str, Any]) -> list[StreamState]:
        """:meth:`open_request` with the params as given (tests send malformed ones)."""
        params = {**params, "keepalive": True}
        return await self._open(Request(request_id="1", method=method, params=params))

    async def _open(self, request: Request) -> list[StreamState]:
        await self.send(request)
        msg = await self._receive_message()
        if not isinstance(msg, Response):
            raise Unavailable(f"labd answered with {msg.TYPE!r} instead of a response")
        if msg.error is not None:
            raise _from_rpc(msg.error)
        result = msg.result if isinstance(msg.result, dict) else {}
        entries = result.get("streams", [])
        # Open each output window beyond the protocol's initial one (memory shared by all).
        window = grown_window(len(entries))
        for entry in entries:
            sid = int(entry["stream_id"])
            state = StreamState(
                stream_id=sid,
                server=str(entry["server"]),
                input=InputStream(sid, window=window),
                stdin=OutputStream(sid, (Channel.STDIN,)),
            )
            self.streams.open(sid, state)
            if window > DEFAULT_WINDOW:
                # labd may have ended every stream and closed already (denied, offline): the
                # reader reports that close; the grant is then moot.
                with contextlib.suppress(trio_websocket.ConnectionClosed):
                    await self.send(Credit(stream_id=sid, bytes=window - DEFAULT_WINDOW))
        return list(self.streams.values())

    async def _receive_message(self) -> Message:
        try:
            data = await self.ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None
        if isinstance(data, bytes):
            raise Unavailable("labd sent data before answering the request")
        return decode(data)

    async def run(self, sink: Sink) -> None:
        """Receive until every stream ended; ``sink`` gets payloads in order.

        Two tasks: one reads the connection (it answers labd's pings and takes stdin credit
        at once), the other feeds ``sink``. Output credit is granted after ``sink`` returned,
        so a slow sink slows the remote command while labctl stays responsive: what the
        reader queues is bounded by that credit. A connection that closes early marks the
        open streams with an error. An exception from ``sink`` (a closed stdout) ends the
        session and propagates.
        """
        queued, pending = trio.open_memory_channel[tuple[StreamState, Channel, bytes]](math.inf)
        failures: list[Exception] = []

        async def read(scope: trio.CancelScope) -> None:
            async with queued:
                try:
                    while not all(s.done for s in self.streams.values()):
                        if not await self._receive_one(queued.send_nowait):
                            return
                except Exception as exc:  # handed to the caller as itself, not as a group
                    failures.append(exc)
                    scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, nursery.cancel_scope)
            async with pending:
                try:
                    async for state, channel, payload in pending:
                        await self._consume(sink, state, channel, payload)
                except Exception as exc:
                    failures.append(exc)
                    nursery.cancel_scope.cancel()
        if failures:
            raise failures[0]

    async def step(self, sink: Sink) -> bool:
        """Receive and handle one message (one task; see :meth:`run`); False once the
        connection closed."""
        items: list[tuple[StreamState, Channel, bytes]] = []
        alive = await self._receive_one(items.append)
        for state, channel, payload in items:
            await self._consume(sink, state, channel, payload)
        return alive

    async def _consume(self, sink: Sink, state: StreamState, channel: Channel, data: bytes) -> None:
        await sink(state, channel, data)
        credit = state.input.consumed(len(data))
        if credit is None or state.done:
            return  # an ended stream gets nothing more; labd may have closed already
        # A closed connection: the reader reports it on the open streams.
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await self.send(credit)

    async def _receive_one(
        self, output: Callable[[tuple[StreamState, Channel, bytes]], None]
    ) -> bool:
        try:
            data = await self.ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            err = _closed(exc)
            for state in self.streams.values():
                if not state.done:
                    state.error = err
            return False
        if isinstance(data, bytes):
            frame = decode_data(data)
            state = self._stream(frame.stream_id)
            output((state, frame.channel, state.input.received(frame)))
            return True
        msg = decode(data)
        if isinstance(msg, Ping):
            await self.send(Pong(nonce=msg.nonce))
        else:
            self._handle(msg)
        return True

    def _handle(self, msg: Message) -> None:
        if isinstance(msg, Error) and msg.stream_id is None:
            raise lab_error(msg.code, msg.message)
        state = self._stream(getattr(msg, "stream_id", None))
        if isinstance(msg, ExecStarted):
            state.pid = msg.pid
        elif isinstance(msg, Credit):
            state.stdin.grant(msg)
            state.credit_changed.set()
            state.credit_changed = trio.Event()
        elif isinstance(msg, ExecExit):
            state.input.exited(msg)
            state.exit = msg
        elif isinstance(msg, LogsEnd):
            state.ended = True
        elif isinstance(msg, Error):
            state.error = lab_error(msg.code, msg.message)
        else:
            raise Unavailable(f"labd sent an unexpected {msg.TYPE!r} message")

    def _stream(self, stream_id: int | None) -> StreamState:
        try:
            return self.streams.require(stream_id)
        except ProtocolError:
            raise Unavailable(f"labd sent a message for unknown stream {stream_id}") from None

    async def send_stdin(self, state: StreamState, chunk: bytes) -> None:
        """Send stdin within the credit labd granted; waits for more when it is spent."""
        view = memoryview(chunk)
        while view:
            while state.stdin.window.available == 0:
                await state.credit_changed.wait()
            frame, view = state.stdin.chunk(Channel.STDIN, view)
            await self.send(frame)


def _from_rpc(error: RpcError) -> LabError:
    return lab_error(error.code, error.message, dict(error.details))


def _closed(exc: trio_websocket.ConnectionClosed) -> LabError:
    reason = exc.reason
    if reason is None:
        return closed(None, None)
    return closed(reason.code, reason.reason)
