"""One agent's WebSocket session inside labd: handshake, reader, watchdog, writer, streams.

The session is a nursery (DESIGN §3): a writer task owns the transport's send side (every
message to the agent goes through one bounded outbox, in order), and an inner cancel scope runs
the handshake, the reader and the heartbeat watchdog. Closing the session for any reason
(protocol error, heartbeat timeout, replacement, revocation, shutdown) cancels that scope,
flushes the outbox for a bounded time and closes the WebSocket with the reason's close code.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import trio

from lab.errors import LabError, NotFound, Unavailable
from lab.labd.hub.stream import HubStream, StartMessage
from lab.model import Agent
from lab.proto import CloseCode, DataFrame, ProtocolError, decode, decode_data, encode
from lab.proto.messages import (
    Credit,
    Error,
    ExecExit,
    ExecStarted,
    Heartbeat,
    Hello,
    LogsEnd,
    Message,
    Ping,
    Pong,
    Response,
    ServerShutdown,
    StreamCancel,
    Welcome,
)
from lab.proto.streams import StreamTable

if TYPE_CHECKING:
    from lab.labd.identity.identities import Revocations
    from lab.store import Store

log = logging.getLogger("lab.labd.hub.registry")

HELLO_TIMEOUT = 10.0  # seconds an agent has to say hello after the upgrade
FLUSH_TIMEOUT = 2.0  # seconds to flush queued messages before closing
CLOSE_TIMEOUT = 2.0
OUTBOX_SIZE = 64

AuditHook = Callable[..., Awaitable[object]]
"""``await audit(action=..., resource=..., result=..., details=...)`` (see labd.audit.record)."""


class Transport(Protocol):
    """The server side of one WebSocket (quart's ``websocket`` fits)."""

    async def receive(self) -> str | bytes: ...
    async def send(self, data: str | bytes) -> None: ...
    async def close(self, code: int, reason: str = "") -> None: ...


class Host(Protocol):
    """What a session needs of the registry that serves it (:class:`AgentHub` fits)."""

    store: Store
    revocations: Revocations
    heartbeat_interval: float
    facts_interval: float
    replica: str

    def admits(self, conn: AgentConnection, *, current_serial: str | None = None) -> bool: ...
    def register(self, conn: AgentConnection, *, current_serial: str | None = None) -> bool: ...
    async def held_elsewhere(self, agent: Agent) -> bool: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


class AgentConnection:
    """One live agent session; created and run by :meth:`AgentHub.serve`."""

    def __init__(
        self,
        hub: Host,
        transport: Transport,
        *,
        name: str,
        serial: str,
        source: str = "",
        audit: AuditHook | None = None,
    ) -> None:
        self.hub = hub
        self.transport = transport
        self.name = name
        self.serial = serial
        self.source = source
        self.audit = audit
        self.session_id = uuid.uuid4().hex
        self.server_id = ""
        self.connected_at = utcnow()
        self.last_heartbeat: datetime | None = None
        self.version = ""
        self.facts: dict[str, Any] = {}
        self.labels: dict[str, str] = {}
        self.welcomed = False
        self.streams = StreamTable[HubStream]()  # labd numbers them
        self.close_code: CloseCode | None = None
        self.close_reason = ""
        self._scope = trio.CancelScope()
        self._last_received = trio.current_time()
        self._received = trio.Event()
        self._facts_written = -float("inf")
        self._protocol_error: ProtocolError | None = None
        self._outbox_send, self._outbox = trio.open_memory_channel[str | bytes](OUTBOX_SIZE)
        self._flushed = trio.Event()
        self._cancels: list[str] = []  # stream-cancels that found the outbox full
        self._streams_changed = trio.Event()

    @property
    def subject(self) -> str:
        return f"server/{self.name}"

    # --- lifecycle ---

    async def run(self) -> None:
        """Serve the session until it is closed or the peer goes away (then: cancelled)."""
        async with trio.open_nursery() as outer:
            outer.start_soon(self._writer)
            with self._scope:
                if await self._guard(self._handshake):
                    async with trio.open_nursery() as inner:
                        inner.start_soon(self._guard, self._reader)
                        inner.start_soon(self._watchdog)
            self.abort_streams("unavailable", f"agent connection closed: {self.close_reason}")
            if self._protocol_error is not None:
                await self._report_protocol_error(self._protocol_error)
            self._outbox_send.close()
            with trio.move_on_after(FLUSH_TIMEOUT):
                await self._flushed.wait()
            outer.cancel_scope.cancel()
        if self.close_code is not None:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self.transport.close(int(self.close_code), self.close_reason)

    async def _guard(self, fn: Callable[[], Awaitable[None]]) -> bool:
        """Run ``fn``; a protocol error closes the session with its code (False)."""
        try:
            await fn()
        except ProtocolError as exc:
            self._protocol_error = exc
            self.close(exc.close_code, exc.message)
            return False
        except LabError as exc:
            # The store failed us (database down): not the agent's fault, it will retry.
            log.error("agent %s: %s", self.subject, exc.message)
            self.close(CloseCode.INTERNAL_ERROR, "labd cannot serve this session now")
            return False
        return self.close_code is None

    def idle_for(self) -> float:
        """Seconds since the last message from the agent."""
        return trio.current_time() - self._last_received

    def close(self, code: CloseCode, reason: str) -> None:
        """Ask the session to end with ``code`` (the first reason wins); returns at once."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self._scope.cancel()

    def abort_streams(self, code: str, message: str) -> None:
        for stream in self.streams:
            stream.abort(code, message)

    async def goodbye(self, retry_after: float, drain: float) -> None:
        """Shutdown: announce it, end open streams, give callers ``drain`` s to leave, close."""
        reason = "labd is shutting down"
        self.abort_streams("unavailable", reason)
        try:
            await self.enqueue(ServerShutdown(retry_after=retry_after, reason=reason))
        except Unavailable:
            return
        with trio.move_on_after(drain):
            while self.streams:
                await self._streams_changed.wait()
        self.close(CloseCode.GOING_AWAY, reason)

    # --- sending ---

    async def enqueue(self, item: Message | bytes) -> None:
        """Queue a message or data frame for the agent (waits while the outbox is full).

        Raises :class:`Unavailable` once the session is closing.
        """
        data = item if isinstance(item, bytes) else encode(item)
        try:
            await self._outbox_send.send(data)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise Unavailable("agent not connected", details={"server": self.name}) from None

    async def _writer(self) -> None:
        try:
            async for data in self._outbox:
                await self.transport.send(data)
                while self._cancels:  # queued while the outbox was full
                    await self.transport.send(self._cancels.pop(0))
        finally:
            self._flushed.set()

    def _cancel_remote(self, stream_id: int) -> None:
        """Queue ``stream-cancel`` without waiting: a full outbox (a slow agent) must neither
        hold up the caller that left nor lose the cancel. Dropped only when the session is
        closing, and then the agent kills every stream of the connection anyway."""
        data = encode(StreamCancel(stream_id=stream_id))
        try:
            self._outbox_send.send_nowait(data)
        except trio.WouldBlock:
            self._cancels.append(data)  # the writer is busy: it sends these next
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    # --- streams ---

    def add_stream(self, start: StartMessage, *, window: int) -> HubStream:
        """A new entry in this session's stream table (the caller sends the start)."""
        if self.close_code is not None:
            raise Unavailable("agent not connected", details={"server": self.name})
        stream_id = self.streams.next_id
        return self.streams.open(stream_id, HubStream(self, start, stream_id, window=window))

    async def end_stream(self, stream: HubStream) -> None:
        """The caller left; cancel the remote side if it is still running (never waits)."""
        self.streams.close(stream.agent_stream_id)
        self._streams_changed.set()
        self._streams_changed = trio.Event()
        stream.close_inbox()
        if stream.active and self.close_code is None:
            self._cancel_remote(stream.agent_stream_id)
        stream.abort("cancelled", "stream closed by labd")

    # --- handshake, reader, watchdog ---

    async def _receive(self) -> Message | DataFrame:
        data = await self.transport.receive()
        self._last_received = trio.current_time()
        self._received.set()
        self._received = trio.Event()
        if isinstance(data, str):
            return decode(data)
        if isinstance(data, bytes | bytearray):
            return decode_data(data)
        raise ProtocolError("empty or unreadable frame")

    async def _handshake(self) -> None:
        with trio.move_on_after(HELLO_TIMEOUT) as timer:
            first = await self._receive()
        if timer.cancelled_caught:
            raise ProtocolError("no hello in time", close_code=CloseCode.POLICY_VIOLATION)
        if not isinstance(first, Hello):
            kind = first.TYPE if not isinstance(first, DataFrame) else "data frame"
            raise ProtocolError(f"expected hello, got {kind}")
        try:
            server = await self.hub.store.servers.get_by_name(self.name)
        except NotFound:
            raise ProtocolError(
                f"server {self.name!r} is not registered", close_code=CloseCode.POLICY_VIOLATION
            ) from None
        self.server_id = server.id
        self.version = first.version
        self.labels = dict(first.labels)
        self.facts = {**server.facts, **first.facts}
        if await self.hub.revocations.is_revoked(self.serial):
            self.close(CloseCode.REVOKED, "certificate revoked")
            return
        try:
            agent: Agent | None = await self.hub.store.agents.get_by_server(server.id)
        except NotFound:
            agent = None
        current = agent.cert_serial if agent is not None else None
        if agent is not None and await self.hub.held_elsewhere(agent):
            self.close(
                CloseCode.DUPLICATE_SESSION,
                f"{self.subject} has a live session on replica {agent.replica}",
            )
            return
        # Refused before it touches the lease or the facts; register() decides again without
        # an await in between, and only then does the session become visible (wait_online).
        if not self.hub.admits(self, current_serial=current):
            return  # a live session of this server exists; closed with DUPLICATE_SESSION
        await self._renew_lease()
        await self._write_facts()
        if not self.hub.register(self, current_serial=current):
            return  # a rival registered while the lease was written
        self.welcomed = True
        await self.enqueue(
            Welcome(session_id=self.session_id, heartbeat_interval=self.hub.heartbeat_interval)
        )
        log.info("agent %s connected (session %s, %s)", self.subject, self.session_id, self.source)

    async def _reader(self) -> None:
        while True:
            item = await self._receive()
            if isinstance(item, DataFrame):
                stream = self.streams.get(item.stream_id)
                if stream is not None:
                    stream.deliver(stream.data(item))
            else:
                await self._on_message(item)

    async def _on_message(self, msg: Message) -> None:
        if isinstance(msg, ExecStarted | ExecExit | LogsEnd) or (
            isinstance(msg, Error) and msg.stream_id is not None
        ):
            assert msg.stream_id is not None
            stream = self.streams.get(msg.stream_id)
            if stream is not None:
                stream.deliver(stream.message(msg))
        elif isinstance(msg, Credit):
            stream = self.streams.get(msg.stream_id)
            if stream is not None:
                stream.stdin_credit(msg)
        elif isinstance(msg, Heartbeat):
            await self._on_heartbeat(msg)
        elif isinstance(msg, Ping):
            await self.enqueue(Pong(nonce=msg.nonce))
        elif isinstance(msg, Pong | Response):
            pass  # answers to nothing we asked for yet
        elif isinstance(msg, Error):
            log.warning("agent %s reports: %s (%s)", self.subject, msg.message, msg.code)
        else:
            raise ProtocolError(f"{msg.TYPE} is not a message an agent sends")

    async def _on_heartbeat(self, msg: Heartbeat) -> None:
        self.last_heartbeat = utcnow()
        if msg.version:
            self.version = msg.version
        self.facts.update(
            load=list(msg.load),
            uptime=msg.uptime,
            memory_total=msg.memory_total,
            memory_available=msg.memory_available,
            agent_version=self.version,
        )
        await self._renew_lease()
        if trio.current_time() - self._facts_written >= self.hub.facts_interval:
            await self._write_facts()

    async def _renew_lease(self) -> None:
        now = utcnow()
        lease = timedelta(seconds=3 * self.hub.heartbeat_interval)
        await self.hub.store.agents.heartbeat(
            self.server_id, replica=self.hub.replica, seen=now, lease_until=now + lease
        )

    async def _write_facts(self) -> None:
        self._facts_written = trio.current_time()
        # NotFound: the server was deleted while connected; its lease lapses on its own.
        with contextlib.suppress(NotFound):
            await self.hub.store.servers.set_facts(self.server_id, dict(self.facts))

    async def _watchdog(self) -> None:
        """No message for three heartbeat intervals: the agent is gone or stuck."""
        limit = 3 * self.hub.heartbeat_interval
        while True:
            deadline = self._last_received + limit
            with trio.move_on_at(deadline):
                await self._received.wait()
            if trio.current_time() >= self._last_received + limit:
                self.close(CloseCode.HEARTBEAT_TIMEOUT, f"no heartbeat for {limit:g}s")
                return

    async def _report_protocol_error(self, exc: ProtocolError) -> None:
        log.warning(
            "closing agent %s (%s): %s [close %d]",
            self.subject,
            self.source or "?",
            exc.message,
            int(exc.close_code),
        )
        if self.audit is None:
            return
        with trio.move_on_after(FLUSH_TIMEOUT):
            try:
                await self.audit(
                    action="agent.protocol_error",
                    resource=self.subject,
                    result="error",
                    source=self.source,
                    details={"message": exc.message, **exc.details},
                )
            except LabError as err:
                log.error("cannot audit the protocol error of %s: %s", self.subject, err.message)
