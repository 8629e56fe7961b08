"""HTTP/1.1 upgrades that the app tunnels itself, byte for byte (hypercorn 0.18, pinned).

hypercorn hands an app WebSocket upgrades as decoded messages and cannot switch a connection
to any other protocol (an ASGI ``http`` response of 101 leaves h11 paused for good), so an
SPDY/3.1 upgrade — what ``kubectl exec``/``port-forward`` still use — cannot pass through
quart. For request paths under the configured prefixes, :class:`UpgradeH11Protocol` gives
every upgrade request without a body (SPDY and WebSocket alike) to a :class:`RawUpgradeStream`
instead. The app sees an ASGI ``http`` scope carrying the extension ``lab.raw_upgrade``:

- it answers with ``http.response.start``; a status of 101 writes the head as given and turns
  the connection into a tunnel: from then on every ``http.response.body`` is written to the
  socket unchanged, and every byte the client sends arrives as ``http.request`` with
  ``more_body=True``; ``more_body=False`` on a body message (or the app returning) closes the
  connection, and the client going away delivers ``http.disconnect``;
- any other status is an ordinary response (``Connection: close`` added) and no switch.

The request's own body is never read (upgrade requests with one are not tunnelled). Memory is
bounded by hypercorn's app queue (``max_app_queue_size`` messages) toward the app and by the
socket's send toward the client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum, auto
from functools import cache
from typing import Any, cast
from urllib.parse import unquote

import h11
from hypercorn.config import Config
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.events import (
    Body,
    Data,
    EndBody,
    Event,
    Request,
    Response,
    StreamClosed,
)
from hypercorn.protocol.h11 import STREAM_ID, H11Protocol, H11WSConnection
from hypercorn.typing import AppWrapper, ASGISendEvent, TaskGroup, WorkerContext
from hypercorn.utils import build_and_validate_headers

EXTENSION = "lab.raw_upgrade"


class _State(Enum):
    REQUEST = auto()
    RESPONSE = auto()
    TUNNEL = auto()
    CLOSED = auto()


def wants_raw_upgrade(request: h11.Request, prefixes: tuple[str, ...]) -> bool:
    """An upgrade request (any protocol) without a body, to a path under ``prefixes``."""
    if not prefixes:
        return False
    path = request.target.split(b"?", 1)[0].decode("latin-1")
    if not path.startswith(prefixes) and not unquote(path).startswith(prefixes):
        return False
    tokens: set[str] = set()
    upgrade = body = False
    for name, value in request.headers:
        lowered = name.lower()
        if lowered == b"connection":
            tokens.update(t.strip().lower() for t in value.decode("latin-1").split(","))
        elif lowered == b"upgrade" and value.strip():
            upgrade = True
        elif lowered == b"transfer-encoding" or (lowered == b"content-length" and value != b"0"):
            body = True
    return upgrade and "upgrade" in tokens and not body


class RawUpgradeStream:
    """One upgrade request, then (after a 101) the tunnel; see the module docstring."""

    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        task_group: TaskGroup,
        *,
        ssl: bool,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
        send: Callable[[Event], Awaitable[None]],
        switch: Callable[[], Awaitable[None]],
    ) -> None:
        self.app = app
        self.config = config
        self.context = context
        self.task_group = task_group
        self.ssl = ssl
        self.client = client
        self.server = server
        self.send = send
        self.switch = switch
        self.state = _State.REQUEST
        self.closed = False
        self.app_put: Callable[[Any], Awaitable[None]] | None = None

    @property
    def idle(self) -> bool:
        return False

    async def handle(self, event: Event) -> None:
        if self.closed:
            return
        if isinstance(event, Request):
            path, _, query = event.raw_path.partition(b"?")
            scope: dict[str, Any] = {
                "type": "http",
                "http_version": event.http_version,
                "asgi": {"spec_version": "2.1", "version": "3.0"},
                "method": event.method,
                "scheme": "https" if self.ssl else "http",
                "path": unquote(path.decode("ascii", "replace")),
                "raw_path": path,
                "query_string": query,
                "root_path": self.config.root_path,
                "headers": event.headers,
                "client": self.client,
                "server": self.server,
                "state": event.state.copy(),
                "extensions": {EXTENSION: {}},
            }
            self.app_put = await self.task_group.spawn_app(
                self.app, self.config, cast(Any, scope), self.app_send
            )
        elif isinstance(event, Data) and self.app_put is not None:
            await self.app_put(
                {"type": "http.request", "body": bytes(event.data), "more_body": True}
            )
        elif isinstance(event, StreamClosed):
            self.closed = True
            if self.app_put is not None:
                await self.app_put({"type": "http.disconnect"})
        # Body/EndBody: an upgrade request has no body (see wants_raw_upgrade).

    async def app_send(self, message: ASGISendEvent | None) -> None:
        if message is None:  # the app returned
            if not self.closed:
                if self.state is _State.REQUEST:
                    await self._respond(500, [])
                    await self.send(EndBody(stream_id=STREAM_ID))
                self.state = _State.CLOSED
                await self.send(StreamClosed(stream_id=STREAM_ID))
            return
        kind = message["type"]
        if kind == "http.response.start" and self.state is _State.REQUEST:
            status = int(cast(Any, message)["status"])
            headers = build_and_validate_headers(cast(Any, message).get("headers", []))
            if status == 101:
                head = b"HTTP/1.1 101 Switching Protocols\r\n"
                head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
                await self.send(Data(stream_id=STREAM_ID, data=head + b"\r\n"))
                self.state = _State.TUNNEL
                await self.switch()
            else:
                await self._respond(status, headers)
        elif kind == "http.response.body" and self.state in (_State.TUNNEL, _State.RESPONSE):
            body = bytes(cast(Any, message).get("body", b""))
            more = bool(cast(Any, message).get("more_body", False))
            if body:
                if self.state is _State.TUNNEL:
                    await self.send(Data(stream_id=STREAM_ID, data=body))
                else:
                    await self.send(Body(stream_id=STREAM_ID, data=body))
            if not more:
                if self.state is _State.RESPONSE:
                    await self.send(EndBody(stream_id=STREAM_ID))
                self.state = _State.CLOSED
                await self.send(StreamClosed(stream_id=STREAM_ID))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in state {self.state.name}")

    async def _respond(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        kept = [(n, v) for n, v in headers if n.lower() != b"connection"]
        await self.send(
            Response(
                stream_id=STREAM_ID, headers=[*kept, (b"connection", b"close")], status_code=status
            )
        )
        self.state = _State.RESPONSE


class UpgradeH11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol, with raw upgrades for paths under ``raw_prefixes``."""

    raw_prefixes: tuple[str, ...] = ()

    async def _create_stream(self, request: h11.Request) -> None:
        if not wants_raw_upgrade(request, self.raw_prefixes):
            await super()._create_stream(request)
            return
        stream = RawUpgradeStream(
            self.app,
            self.config,
            self.context,
            self.task_group,
            ssl=self.ssl,
            client=self.client,
            server=self.server,
            send=self.stream_send,
            switch=self._switch_to_tunnel,
        )
        self.stream = cast(Any, stream)
        headers = (
            request.headers.raw_items()
            if self.config.h11_pass_raw_headers
            else list(request.headers)
        )
        await stream.handle(
            Request(
                stream_id=STREAM_ID,
                headers=headers,
                http_version=request.http_version.decode(),
                method=request.method.decode("ascii").upper(),
                raw_path=request.target,
                state=self.connection_state,
            )
        )
        self.keep_alive_requests += 1
        await self.context.mark_request()

    async def _switch_to_tunnel(self) -> None:
        # From here on bytes pass through unparsed (what hypercorn does after a WebSocket
        # handshake); the bytes the client sent after its request head come first.
        self.connection = H11WSConnection(cast(h11.Connection, self.connection))
        await self.can_read.set()


@cache
def upgrade_protocol_wrapper(raw_prefixes: tuple[str, ...]) -> type[ProtocolWrapper]:
    """A hypercorn ``ProtocolWrapper`` whose HTTP/1.1 protocol tunnels upgrades under
    ``raw_prefixes`` (HTTP/2 connections are left as they are: h2 has no upgrades)."""

    class _Wrapper(ProtocolWrapper):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if type(self.protocol) is H11Protocol:
                protocol = UpgradeH11Protocol(
                    self.app,
                    self.config,
                    self.context,
                    self.task_group,
                    self.state,
                    self.ssl,
                    self.client,
                    self.server,
                    self.send,
                )
                protocol.raw_prefixes = raw_prefixes
                self.protocol = protocol

    return _Wrapper
