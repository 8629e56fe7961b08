"""One agent's WebSocket session inside labd: the trio driver of :class:`HubSession`.

The protocol (handshake, heartbeat silence, the stream table, close codes) is the sans-IO
:class:`lab.proto.hub_session.HubSession`; this driver feeds it what the agent sends and the
time, and carries out its actions: store reads and writes, the registry's decisions, queueing
messages, handing stream items to callers.

The session is a nursery (DESIGN §3): a writer task owns the transport's send side (every
message to the agent goes through one bounded outbox, in order), and the session's own task
runs the reader under a cancel scope: the handshake, what the agent sends and the core's
deadlines (one task for both keeps a session small: 10,000 of them share one labd). Closing
the session for any reason (protocol error, heartbeat timeout, replacement, revocation,
shutdown) cancels that scope, flushes the outbox for a bounded time and closes the WebSocket
with the reason's close code.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import trio

from lab.errors import LabError, NotFound, Unavailable
from lab.labd.hub.stream import HubStream, StartMessage
from lab.model import Agent
from lab.proto import CloseCode, ProtocolError, encode
from lab.proto.hub_session import (
    Action,
    CancelRemote,
    CheckRevoked,
    Claim,
    Close,
    Deliver,
    FindAgent,
    FindServer,
    HubSession,
    RecordHeartbeat,
    Register,
    RenewLease,
    Report,
    Send,
    StdinCredit,
    WriteFacts,
)
from lab.proto.messages import Message, ServerShutdown, StreamCancel
from lab.proto.streams import StreamTable

if TYPE_CHECKING:
    from lab.labd.identity.identities import Revocations
    from lab.store import Store

log = logging.getLogger("lab.labd.hub.registry")

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

    # One per connected agent, 10,000 per labd: no instance dict.
    __slots__ = (
        "_cancels",
        "_flushed",
        "_outbox",
        "_outbox_send",
        "_protocol_error",
        "_scope",
        "_streams_changed",
        "audit",
        "connected_at",
        "core",
        "hub",
        "last_heartbeat",
        "source",
        "transport",
    )

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
        self.source = source
        self.audit = audit
        self.core = HubSession[HubStream](
            name=name,
            serial=serial,
            session_id=uuid.uuid4().hex,
            heartbeat_interval=hub.heartbeat_interval,
            facts_interval=hub.facts_interval,
            now=trio.current_time(),
        )
        self.connected_at = utcnow()
        self.last_heartbeat: datetime | None = None
        self._scope = trio.CancelScope()
        self._protocol_error: ProtocolError | None = None
        self._outbox_send, self._outbox = trio.open_memory_channel[str | bytes](OUTBOX_SIZE)
        self._flushed = trio.Event()
        self._cancels: list[str] = []  # stream-cancels that found the outbox full
        self._streams_changed = trio.Event()

    # --- the core's state, for the registry and listings ---

    @property
    def name(self) -> str:
        return self.core.name

    @property
    def serial(self) -> str:
        return self.core.serial

    @property
    def session_id(self) -> str:
        return self.core.session_id

    @property
    def subject(self) -> str:
        return self.core.subject

    @property
    def server_id(self) -> str:
        return self.core.server_id

    @property
    def version(self) -> str:
        return self.core.version

    @property
    def facts(self) -> dict[str, Any]:
        return self.core.facts

    @property
    def labels(self) -> dict[str, str]:
        return self.core.labels

    @property
    def streams(self) -> StreamTable[HubStream]:
        return self.core.streams

    @property
    def close_code(self) -> CloseCode | None:
        return self.core.close_code

    @property
    def close_reason(self) -> str:
        return self.core.close_reason

    # --- lifecycle ---

    async def run(self) -> None:
        """Serve the session until it is closed or the peer goes away (then: cancelled)."""
        async with trio.open_nursery() as outer:
            outer.start_soon(self._writer)
            with self._scope:
                await self._guard(self._reader)
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

    async def _guard(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn``; a store failure closes the session (1011): not the agent's fault, it
        will retry."""
        try:
            await fn()
        except LabError as exc:
            log.error("agent %s: %s", self.subject, exc.message)
            self.close(CloseCode.INTERNAL_ERROR, "labd cannot serve this session now")

    def idle_for(self) -> float:
        """Seconds since the last message from the agent."""
        return self.core.idle_for(trio.current_time())

    def close(self, code: CloseCode, reason: str) -> None:
        """Ask the session to end with ``code`` (the first reason wins); returns at once."""
        for action in self.core.close(code, reason):
            assert isinstance(action, Close)
            self._closed(action)
        self._scope.cancel()

    def _closed(self, action: Close) -> None:
        if action.error is not None:
            self._protocol_error = action.error
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
        """A new entry in this session's stream table (the caller sends the start).

        Raises :class:`Unavailable` once the session is closing."""
        return self.core.open_stream(lambda sid: HubStream(self, start, sid, window=window))

    async def end_stream(self, stream: HubStream) -> None:
        """The caller left; cancel the remote side if it is still running (never waits)."""
        actions = self.core.end_stream(stream)
        self._streams_changed.set()
        self._streams_changed = trio.Event()
        stream.close_inbox()
        for action in actions:
            if isinstance(action, CancelRemote):
                self._cancel_remote(action.stream_id)
        stream.abort("cancelled", "stream closed by labd")

    # --- reader and timer: the core's events ---

    async def _reader(self) -> None:
        """Feed the core what the agent sends, and its timer at its deadlines (hello in time,
        heartbeat silence): one task for both. Carrying out what a message asks for (a lease
        write, a full outbox) is bounded by the deadline the message left, so a blocked reader
        still closes a silent session on time; the handshake's lookups (no deadline) are not
        bounded. A receive or an action cut short by the deadline loses nothing the core
        would look at: the timer closes the session then."""
        while True:
            with trio.move_on_at(self._deadline()) as waiting:
                data = await self.transport.receive()
            if waiting.cancelled_caught:
                await self._perform(self.core.timer(trio.current_time()))
                continue
            actions = self.core.received(data, trio.current_time())
            with trio.move_on_at(self._deadline()):
                await self._perform(actions)

    def _deadline(self) -> float:
        deadline = self.core.next_deadline()
        return math.inf if deadline is None else deadline

    async def _perform(self, actions: list[Action[HubStream]]) -> None:
        for action in actions:
            follow = await self._do(action)
            if follow:
                await self._perform(follow)

    async def _do(self, action: Action[HubStream]) -> list[Action[HubStream]]:
        """Carry out one action; what the core answers to its outcome."""
        if isinstance(action, Deliver):
            action.stream.deliver(action.item)
        elif isinstance(action, StdinCredit):
            action.stream.stdin_credit()
        elif isinstance(action, Send):
            await self.enqueue(action.message)
        elif isinstance(action, RecordHeartbeat):
            self.last_heartbeat = utcnow()
            await self._renew_lease()
        elif isinstance(action, RenewLease):
            await self._renew_lease()
        elif isinstance(action, WriteFacts):
            await self._write_facts(action.facts)
        elif isinstance(action, Close):
            self._closed(action)
        elif isinstance(action, CancelRemote):
            self._cancel_remote(action.stream_id)
        elif isinstance(action, Report):
            error = action.error
            log.warning("agent %s reports: %s (%s)", self.subject, error.message, error.code)
        else:
            return await self._admit(action)
        return []

    async def _admit(
        self, action: FindServer | CheckRevoked | FindAgent | Claim | Register
    ) -> list[Action[HubStream]]:
        """The handshake's lookups and the registry's decisions, answered to the core."""
        core = self.core
        if isinstance(action, FindServer):
            try:
                server = await self.hub.store.servers.get_by_name(self.name)
            except NotFound:
                return core.server_unknown()
            return core.server_found(server.id, server.facts)
        if isinstance(action, CheckRevoked):
            return core.revocation(await self.hub.revocations.is_revoked(self.serial))
        if isinstance(action, FindAgent):
            return await self._find_agent()
        # The registry closes this session when a live rival holds on (4006).
        if isinstance(action, Claim):
            admitted = self.hub.admits(self, current_serial=action.current_serial)
            return core.claimed(trio.current_time()) if admitted else []
        if not self.hub.register(self, current_serial=action.current_serial):
            return []
        log.info("agent %s connected (session %s, %s)", self.subject, self.session_id, self.source)
        return core.registered()

    async def _find_agent(self) -> list[Action[HubStream]]:
        try:
            agent: Agent | None = await self.hub.store.agents.get_by_server(self.server_id)
        except NotFound:
            agent = None
        if agent is None:
            return self.core.agent_found(None, None)
        held_by = agent.replica if await self.hub.held_elsewhere(agent) else None
        return self.core.agent_found(agent.cert_serial, held_by)

    async def _renew_lease(self) -> None:
        now = utcnow()
        lease = timedelta(seconds=3 * self.hub.heartbeat_interval)
        await self.hub.store.agents.heartbeat(
            self.server_id, replica=self.hub.replica, seen=now, lease_until=now + lease
        )

    async def _write_facts(self, facts: dict[str, Any]) -> None:
        # NotFound: the server was deleted while connected; its lease lapses on its own.
        with contextlib.suppress(NotFound):
            await self.hub.store.servers.set_facts(self.server_id, facts)

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
