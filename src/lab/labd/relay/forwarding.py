"""Streams for agents another replica holds: forwarded replica-to-replica over mTLS.

:class:`ForwardingHub` is what the exec/logs relay (:mod:`lab.labd.relay.relay`) sees as its hub in
cluster mode: a stream for an agent connected here opens on the local :class:`AgentHub`; one for
an agent whose presence lease names another live replica opens a WebSocket to that replica's
``/ws/replica/stream`` (see :mod:`lab.labd.api.replica_ws`) with this replica's
``replica/<id>`` certificate, and the holder runs it on its own hub. The user's identity, the
RBAC decision and the audit entries stay with the relay on the first replica.

The link carries the agent protocol's own frames, so flow control is end to end:

- output: the relay's ``Credit`` messages travel to the holder, which grants them to the agent;
  the agent never sends more than the credit, so the link holds at most one window per stream;
- stdin: the holder answers each stdin chunk its hub stream accepted with a ``Credit`` of that
  many bytes; this side sends stdin only within a window of such acknowledgements, so a slow
  remote process slows the CLI through both hops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection

from lab.errors import Invalid, LabError, NotFound, PermissionDenied, Unavailable
from lab.labd.relay.links import FORWARD_PATH, IDLE_REASON, Link, LinkPool
from lab.proto import ProtocolError, decode, decode_data, encode
from lab.proto.frames import Channel, DataFrame
from lab.proto.messages import (
    DEFAULT_WINDOW,
    Credit,
    Error,
    ExecExit,
    ExecStart,
    ExecStarted,
    LogsEnd,
    LogsStart,
    Request,
    Resize,
    Response,
    Signal,
    StdinClose,
)
from lab.proto.streams import OutputStream

if TYPE_CHECKING:
    from lab.labd.cluster import ClusterMember
    from lab.labd.hub.registry import AgentHub
    from lab.labd.relay.relay import AgentStream, Incoming, Uplink

log = logging.getLogger("lab.labd.relay.forwarding")

FORWARD_METHOD = "forward"
CONNECT_TIMEOUT = 5.0  # TCP + TLS + WebSocket handshake + the holder's answer

_ERRORS: dict[str, type[LabError]] = {
    "not_found": NotFound,
    "invalid": Invalid,
    "permission_denied": PermissionDenied,
}


def forward_request(server: str, start: ExecStart | LogsStart) -> Request:
    """The first message on a forwarding link: which agent, and the stream's start."""
    return Request(
        request_id=uuid.uuid4().hex,
        method=FORWARD_METHOD,
        params={"server": server, "start": json.loads(encode(start))},
    )


def parse_forward_request(msg: object) -> tuple[str, ExecStart | LogsStart]:
    """The agent name and start message of a forwarding request; ProtocolError otherwise."""
    if not isinstance(msg, Request) or msg.method != FORWARD_METHOD:
        raise ProtocolError(f"the first message must be a {FORWARD_METHOD!r} request")
    server = msg.params.get("server")
    start = msg.params.get("start")
    if not isinstance(server, str) or not server or not isinstance(start, dict):
        raise ProtocolError("a forward request names a server and carries a start message")
    parsed = decode(json.dumps(start))
    if not isinstance(parsed, ExecStart | LogsStart):
        raise ProtocolError("a forwarded stream starts with exec-start or logs-start")
    return server, parsed


def error_from(code: str, message: str) -> LabError:
    """The LabError the holder's refusal stands for (Unavailable for anything else)."""
    return _ERRORS.get(code, Unavailable)(message)


class ForwardedStream:
    """This side of a stream the holding replica runs (an :class:`AgentStream`)."""

    def __init__(
        self, ws: WebSocketConnection, start: ExecStart | LogsStart, *, window: int
    ) -> None:
        self.stream_id = start.stream_id
        self.start = start
        self._ws = ws
        self._stdin = OutputStream(start.stream_id, (Channel.STDIN,), window=window)
        self._acked = trio.Event()
        self._done = False
        self._closed = False

    async def send(self, item: Uplink, /) -> None:
        """Stdin bytes (within the holder's acknowledged window) or a control message.

        Raises Unavailable once the link to the holder is gone.
        """
        if isinstance(item, bytes | bytearray | memoryview):
            await self._send_stdin(bytes(item))
            return
        if isinstance(item, Credit | Signal | Resize | StdinClose):
            await self._send(encode(item))
            return
        raise Invalid(f"a stream does not take {type(item).__name__} messages")

    async def _send_stdin(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            while self._stdin.window.available == 0:
                if self._closed:
                    raise Unavailable("the replica holding the agent went away")
                await self._acked.wait()
            frame, view = self._stdin.chunk(Channel.STDIN, view)
            await self._send(frame)

    async def _send(self, data: str | bytes) -> None:
        try:
            await self._ws.send_message(data)
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            self._closed = True
            raise Unavailable("the replica holding the agent went away") from None

    @property
    def ended_cleanly(self) -> bool:
        """The holder sent the stream's last item and the link is still up."""
        return self._done and not self._closed

    def __aiter__(self) -> AsyncIterator[Incoming]:
        return self._items()

    async def _items(self) -> AsyncIterator[Incoming]:
        """What the holder relays from the agent; a lost link ends with an ``Error``."""
        while not self._done:
            try:
                data = await self._ws.get_message()
            except ConnectionClosed:
                self._closed = True
                self._acked.set()
                self._done = True
                yield Error(
                    stream_id=self.stream_id,
                    code="unavailable",
                    message="the replica holding the agent went away",
                )
                return
            if isinstance(data, bytes | bytearray):
                frame = decode_data(data)
                yield DataFrame(
                    stream_id=self.stream_id,
                    channel=frame.channel,
                    seq=frame.seq,
                    payload=frame.payload,
                )
                continue
            msg = decode(data)
            if isinstance(msg, Credit):
                self._stdin.grant(msg)  # the holder accepted that much stdin
                self._acked.set()
                self._acked = trio.Event()
            elif isinstance(msg, ExecStarted | ExecExit | LogsEnd | Error):
                self._done = not isinstance(msg, ExecStarted)
                yield msg
            else:
                raise ProtocolError(f"{msg.TYPE} is not a message a holding replica sends")


@asynccontextmanager
async def forward_stream(
    url: str,
    context: ssl.SSLContext,
    server: str,
    start: ExecStart | LogsStart,
    *,
    window: int = DEFAULT_WINDOW,
    pool: LinkPool | None = None,
) -> AsyncIterator[ForwardedStream]:
    """Open ``start`` on ``server``'s agent through the replica at ``url``.

    The link comes from ``pool`` (a private one, closed on the way out, when None) and goes
    back to it when the stream ended cleanly; leaving the block early closes the link, and the
    holder then leaves its hub stream, which cancels the remote process. Raises Unavailable
    when the replica cannot be reached or refuses (its agent left), NotFound when it does not
    know the server.
    """
    try:
        async with contextlib.AsyncExitStack() as stack:
            if pool is None or not pool.running:
                pool = LinkPool()
                nursery = await stack.enter_async_context(trio.open_nursery())
                await nursery.start(pool.run)
                stack.callback(nursery.cancel_scope.cancel)
            link = await _open(pool, url, context, server, start)
            forwarded = ForwardedStream(link.ws, start, window=window)
            clean = False
            try:
                yield forwarded
                clean = forwarded.ended_cleanly
            finally:
                if clean:
                    pool.give_back(link)
                else:
                    link.close()
    except BaseExceptionGroup as group:
        # A private pool's nursery wraps whatever ends the block in a group; callers expect
        # the one error.
        leaf = _single(group)
        if leaf is None:
            raise
        raise leaf from None


async def _open(
    pool: LinkPool, url: str, context: ssl.SSLContext, server: str, start: ExecStart | LogsStart
) -> Link:
    """A link on which the holder accepted ``start``. A pooled link the holder closed as idle
    before it read the request is replaced by a new one (the request was never seen); any
    other failure is Unavailable, as the holder may have started the process."""
    for _ in range(2):
        request = forward_request(server, start)
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                link, reused = await pool.take(url, context)
                try:
                    await link.ws.send_message(encode(request))
                    answer = decode(await link.ws.get_message())
                except BaseException:
                    link.close()
                    raise
        except ConnectionClosed as exc:
            if reused and exc.reason is not None and exc.reason.reason == IDLE_REASON:
                continue
            raise _unreachable(server, url, exc) from None
        except (OSError, trio.TooSlowError, HandshakeError) as exc:
            raise _unreachable(server, url, exc) from None
        except BaseExceptionGroup as group:
            leaf = _single(group)
            if isinstance(leaf, OSError | HandshakeError):
                raise _unreachable(server, url, leaf) from None
            raise
        if not isinstance(answer, Response) or answer.request_id != request.request_id:
            link.close()
            raise Unavailable("the holding replica answered out of turn")
        if answer.error is not None:
            link.close()
            raise error_from(answer.error.code, answer.error.message)
        result = answer.result if isinstance(answer.result, dict) else {}
        link.reusable = bool(result.get("reuse"))
        return link
    raise Unavailable(f"cannot reach the replica holding {server}: links closed as idle")


def _unreachable(server: str, url: str, exc: BaseException) -> Unavailable:
    return Unavailable(
        f"cannot reach the replica holding {server}: {exc!r}",
        details={"server": server, "replica_url": url},
    )


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The only leaf of a (nested) exception group, or None when it holds several."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None


class ForwardingHub:
    """The relay's hub in cluster mode: local agents here, others through their holder."""

    def __init__(self, hub: AgentHub, cluster: ClusterMember) -> None:
        self.hub = hub
        self.cluster = cluster

    def is_online(self, name: str, /) -> bool:
        return self.hub.is_online(name) or self.cluster.holder_of(name) is not None

    def agent_stream(
        self, server_name: str, start: ExecStart | LogsStart, /
    ) -> AbstractAsyncContextManager[AgentStream]:
        """Local when the agent is connected here, else forwarded to the replica its lease
        names (Unavailable when none is alive). See :meth:`AgentHub.agent_stream`."""
        if self.hub.is_online(server_name):
            return self.hub.agent_stream(server_name, start)
        return self._elsewhere(server_name, start)

    @asynccontextmanager
    async def _elsewhere(
        self, server_name: str, start: ExecStart | LogsStart
    ) -> AsyncIterator[AgentStream]:
        replica = self.cluster.holder_of(server_name)
        if replica is None:
            # This replica's view of the leases is up to a poll old: an agent that has just
            # connected to another replica is found by reading them now.
            await self.cluster.refresh_holders()
            replica = self.cluster.holder_of(server_name)
        if replica is None:
            async with self.hub.agent_stream(server_name, start) as local:  # NotFound / Unavailable
                yield local
            return
        url = self.cluster.peers[replica]
        log.debug("forwarding a stream of %s to replica %s (%s)", server_name, replica, url)
        async with forward_stream(
            url, self.cluster.client_ssl_context(), server_name, start, pool=self.cluster.links
        ) as forwarded:
            yield forwarded


__all__ = [
    "FORWARD_PATH",
    "ForwardedStream",
    "ForwardingHub",
    "error_from",
    "forward_request",
    "forward_stream",
    "parse_forward_request",
]
