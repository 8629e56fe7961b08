"""Links to peer replicas for forwarded streams, kept open from one stream to the next.

Opening a link costs TCP, TLS with both replicas' certificates and the WebSocket handshake,
on both replicas' CPUs: timed at 19 ms of the 51 ms a forwarded exec took beyond a direct one
(load 6-7), and paid again by every forwarded stream. A :class:`LinkPool` keeps the link of a
stream that ended cleanly (the holder sent its last item and said it takes another request)
for the next stream to the same replica. A link whose caller left early is closed instead:
that is how the holder learns to cancel the remote process. One stream at a time runs on a
link; concurrent streams to one replica open more links, and up to ``MAX_IDLE`` of them wait.

A link waits in the pool at most ``POOL_IDLE`` seconds, well under the holder's own idle
limit (:data:`HOLDER_IDLE`, after which the holder closes it with :data:`IDLE_REASON`), and
only links made with the replica's current certificate are taken again.
"""

from __future__ import annotations

import logging
import ssl
from urllib.parse import urlsplit

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

from lab.proto.frames import HEADER_SIZE, MAX_PAYLOAD

log = logging.getLogger("lab.labd.relay.links")

FORWARD_PATH = "/ws/replica/stream"
CLOSE_TIMEOUT = 2.0
POOL_IDLE = 20.0  # seconds a link waits in the pool
HOLDER_IDLE = 60.0  # seconds the holder waits for the next request on a link
IDLE_REASON = "idle"  # the holder's close reason after HOLDER_IDLE
MAX_IDLE = 8  # idle links kept per replica


class Link:
    """One WebSocket to a peer's forwarding route, open until :meth:`close`."""

    __slots__ = ("_done", "context", "idle_since", "reusable", "url", "ws")

    def __init__(self, ws: WebSocketConnection, url: str, context: ssl.SSLContext) -> None:
        self.ws = ws
        self.url = url
        self.context = context
        self.idle_since = 0.0
        self.reusable = False  # the holder said it takes another request after a stream
        self._done = trio.Event()

    @property
    def open(self) -> bool:
        return self.ws.closed is None and not self._done.is_set()

    def close(self) -> None:
        """Close the link (in the background: its task sends the close frame)."""
        self._done.set()

    async def wait_closed(self) -> None:
        await self._done.wait()


class LinkPool:
    """Idle links by replica URL; run :meth:`run` in a nursery that outlives the streams."""

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self._idle: dict[str, list[Link]] = {}
        self.opened = 0  # links opened so far (tests and benchmarks read it)

    @property
    def running(self) -> bool:
        return self._nursery is not None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the links' tasks until cancelled; then every link is closed."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                while True:
                    await trio.sleep(POOL_IDLE / 2)
                    self._expire()
        finally:
            self._nursery = None
            for links in self._idle.values():
                for link in links:
                    link.close()
            self._idle.clear()

    async def take(self, url: str, context: ssl.SSLContext) -> tuple[Link, bool]:
        """An idle link to ``url`` made with ``context``, or a new one; (link, reused).

        Raises what opening a link raises (``OSError``, ``HandshakeError``); cancellation
        while opening closes the half-open link."""
        idle = self._idle.get(url, [])
        now = trio.current_time()
        while idle:
            link = idle.pop()
            if link.open and link.context is context and now - link.idle_since < POOL_IDLE:
                return link, True
            link.close()
        if self._nursery is None:
            raise RuntimeError("LinkPool.run is not running")
        link = await self._nursery.start(self._hold, url, context)
        self.opened += 1
        return link, False

    def give_back(self, link: Link) -> None:
        """Keep ``link`` for the next stream to its replica (closed when it cannot be)."""
        idle = self._idle.setdefault(link.url, [])
        if not link.open or not link.reusable or self._nursery is None or len(idle) >= MAX_IDLE:
            link.close()
            return
        link.idle_since = trio.current_time()
        idle.append(link)

    def _expire(self) -> None:
        now = trio.current_time()
        for url, links in list(self._idle.items()):
            keep = [k for k in links if k.open and now - k.idle_since < POOL_IDLE]
            for link in links:
                if link not in keep:
                    link.close()
            if keep:
                self._idle[url] = keep
            else:
                del self._idle[url]

    async def _hold(
        self, url: str, context: ssl.SSLContext, *, task_status: trio.TaskStatus[Link]
    ) -> None:
        """Open the link, hand it out, keep its reader task until it is closed."""
        started = False
        stream: trio.SSLStream[trio.SocketStream] | None = None
        try:
            async with trio.open_nursery() as nursery:
                ws, stream = await connect_link(nursery, url, context)
                link = Link(ws, url, context)
                task_status.started(link)
                started = True
                await link.wait_closed()
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
        except Exception as exc:
            if not started:
                raise _single(exc) from None
            # The reader failed (the peer broke the connection): whoever uses the link sees
            # it closed; nothing else to do.
            log.debug("link to %s ended: %r", url, exc)
        finally:
            if stream is not None:
                await trio.aclose_forcefully(stream)


async def connect_link(
    nursery: trio.Nursery, url: str, context: ssl.SSLContext
) -> tuple[WebSocketConnection, trio.SSLStream[trio.SocketStream]]:
    """TLS and the WebSocket to a peer's forwarding route; the caller closes the TLS stream
    (trio-websocket leaves a client's TCP connection open when the server closes first)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    stream = await trio.open_ssl_over_tcp_stream(
        host, port, ssl_context=context, https_compatible=True
    )
    try:
        ws = await wrap_client_stream(
            nursery, stream, host, FORWARD_PATH, max_message_size=HEADER_SIZE + MAX_PAYLOAD
        )
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return ws, stream


def _single(exc: BaseException) -> BaseException:
    """The only leaf of a (nested) exception group, else the group itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
