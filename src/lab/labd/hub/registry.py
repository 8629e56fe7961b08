"""The agent hub: labd's registry of live agent sessions and the streams relayed through them.

Routes use three things:

- :meth:`AgentHub.is_online` / :meth:`AgentHub.sessions` for presence and listings;
- ``async with hub.agent_stream(server_name, start) as stream`` to run an exec or a log stream
  on an agent (see :class:`lab.labd.hub.stream.HubStream`);
- :meth:`AgentHub.serve`, called by the ``/ws/agent`` route for each agent connection.

labd runs :meth:`AgentHub.run` in its root nursery: it closes revoked agents' sessions and, on
the shutdown event, says goodbye to every agent before hypercorn's grace period ends.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs
import trio
from attrs import define, frozen

from lab.errors import NotFound, Unavailable
from lab.labd.hub.session import AgentConnection, AuditHook, Transport
from lab.labd.hub.stream import HubStream, StartMessage
from lab.proto import CloseCode
from lab.proto.hub_session import STALE_HEARTBEATS, gives_way
from lab.proto.messages import DEFAULT_WINDOW

if TYPE_CHECKING:
    from lab.labd.identity.identities import Revocations
    from lab.model import Agent, Certificate
    from lab.store import Store

__all__ = ["AdmissionBucket", "AgentHub", "HubStream", "SessionInfo", "Transport"]

log = logging.getLogger("lab.labd.hub.registry")


@frozen(kw_only=True)
class SessionInfo:
    """A snapshot of one live agent session, for listings."""

    name: str
    server_id: str
    session_id: str
    connected_at: datetime
    last_heartbeat: datetime | None
    version: str
    facts: dict[str, Any]
    labels: dict[str, str]
    streams: int
    source: str


@define
class AdmissionBucket:
    """Token bucket for new agent handshakes: ``rate`` per second, bursting one second's worth.

    Pure: the caller passes the time. ``rate <= 0`` admits everything.
    """

    rate: float
    tokens: float = -1.0
    updated: float = 0.0

    def admit(self, now: float) -> bool:
        if self.rate <= 0:
            return True
        burst = max(1.0, self.rate)
        if self.tokens < 0:
            self.tokens, self.updated = burst, now
        self.tokens = min(burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def default_replica() -> str:
    """This process's name in presence leases: host name plus a per-start suffix."""
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


class AgentHub:
    """Live agent sessions of this labd replica, by server name and session id."""

    def __init__(
        self,
        store: Store,
        revocations: Revocations,
        *,
        heartbeat_interval: float = 10.0,
        admit_rate: float = 200.0,
        facts_interval: float = 60.0,
        replica: str | None = None,
        shutdown_spread: tuple[float, float] = (1.0, 10.0),
        drain_timeout: float = 2.0,
    ) -> None:
        self.store = store
        self.revocations = revocations
        self.heartbeat_interval = heartbeat_interval
        self.facts_interval = facts_interval
        self.replica = replica or default_replica()
        self.shutdown_spread = shutdown_spread
        self.drain_timeout = drain_timeout
        self._admission = AdmissionBucket(admit_rate)
        self._by_name: dict[str, AgentConnection] = {}
        self._by_id: dict[str, AgentConnection] = {}
        self._live: set[AgentConnection] = set()
        self._changed = trio.Event()
        self.closing = False
        self.stopping = trio.Event()  # set with closing: wakes what waits for labd's shutdown

    # --- presence ---

    def __len__(self) -> int:
        return len(self._by_name)

    def is_online(self, name: str) -> bool:
        """Whether ``name``'s agent has a welcomed session on this replica."""
        return name in self._by_name

    def sessions(self) -> list[SessionInfo]:
        """Snapshots of the live sessions, ordered by server name."""
        return [self._info(self._by_name[name]) for name in sorted(self._by_name)]

    def session(self, name: str) -> SessionInfo | None:
        conn = self._by_name.get(name)
        return None if conn is None else self._info(conn)

    def session_by_id(self, session_id: str) -> SessionInfo | None:
        conn = self._by_id.get(session_id)
        return None if conn is None else self._info(conn)

    async def wait_online(self, name: str, session_id: str | None = None) -> SessionInfo:
        """Wait until ``name`` is online (with a session other than ``session_id``)."""
        while True:
            conn = self._by_name.get(name)
            if conn is not None and conn.session_id != session_id:
                return self._info(conn)
            await self._changed.wait()

    async def wait_offline(self, name: str) -> None:
        while name in self._by_name:
            await self._changed.wait()

    @staticmethod
    def _info(conn: AgentConnection) -> SessionInfo:
        return SessionInfo(
            name=conn.name,
            server_id=conn.server_id,
            session_id=conn.session_id,
            connected_at=conn.connected_at,
            last_heartbeat=conn.last_heartbeat,
            version=conn.version,
            facts=dict(conn.facts),
            labels=dict(conn.labels),
            streams=len(conn.streams),
            source=conn.source,
        )

    # --- streams ---

    @asynccontextmanager
    async def agent_stream(
        self, server_name: str, start: StartMessage, *, window: int = DEFAULT_WINDOW
    ) -> AsyncIterator[HubStream]:
        """Start an exec (``ExecStart``) or log stream (``LogsStart``) on ``server_name``.

        The agent gets ``start`` with a stream id of this connection; everything the stream
        yields carries ``start.stream_id``. ``window`` is the initial output credit (it must
        match the agent's, the protocol default). Raises :class:`NotFound` for a server labd
        does not know and :class:`Unavailable` at once when its agent is not connected or labd
        is shutting down.

        Leaving the block before the stream ended (the caller's client went away, or the
        block raised or was cancelled) sends ``stream-cancel``: the agent kills the process
        group. If the agent connection drops, the stream's last item is an ``Error``.
        """
        if self.closing:
            raise Unavailable("labd is shutting down")
        conn = self._by_name.get(server_name)
        if conn is None:
            await self.store.servers.get_by_name(server_name)  # NotFound for unknown servers
            raise Unavailable("agent not connected", details={"server": server_name})
        stream = conn.add_stream(start, window=window)
        try:
            await conn.enqueue(attrs.evolve(start, stream_id=stream.agent_stream_id))
            yield stream
        finally:
            with trio.CancelScope(shield=True):
                await conn.end_stream(stream)

    # --- sessions ---

    def admit(self) -> bool:
        """Take an admission token for a new handshake; False: refuse it (close 1013)."""
        return not self.closing and self._admission.admit(trio.current_time())

    async def serve(
        self,
        transport: Transport,
        *,
        name: str,
        serial: str,
        source: str = "",
        audit: AuditHook | None = None,
    ) -> None:
        """Run one agent connection (the ``/ws/agent`` handler calls this after accepting).

        Returns when the session ends; closes the WebSocket with the reason's code. When the
        peer disconnects the caller is cancelled, and the session still unregisters and
        releases its presence lease (shielded).
        """
        conn = AgentConnection(
            self, transport, name=name, serial=serial, source=source, audit=audit
        )
        self._live.add(conn)
        try:
            if self.closing:
                conn.close(CloseCode.GOING_AWAY, "labd is shutting down")
            await conn.run()
        finally:
            with trio.CancelScope(shield=True):
                await self._forget(conn)

    def register(self, conn: AgentConnection, *, current_serial: str | None = None) -> bool:
        """A session finished its handshake: it becomes the server's one session, or is refused.

        A live session is never knocked off by a second one (two holders of one identity would
        alternate): the newcomer is closed with DUPLICATE_SESSION and False is returned. The
        old session gives way only when it is stale (nothing received for 1.5 heartbeat
        intervals: a half-dead connection of an agent that reconnected) or when the newcomer
        holds the server's current certificate (``current_serial``, after a renewal or a
        replace enrollment) and the old session does not. See docs/protocol.md.
        """
        if not self.admits(conn, current_serial=current_serial):
            return False
        old = self._by_name.get(conn.name)
        self._by_name[conn.name] = conn
        self._by_id[conn.session_id] = conn
        if old is not None and old is not conn:
            self._by_id.pop(old.session_id, None)
            old.close(CloseCode.REPLACED, "replaced by a newer connection")
        self._notify()
        return True

    async def held_elsewhere(self, agent: Agent) -> bool:
        """Whether another live replica holds a fresh session of ``agent``'s server (cluster
        mode): its presence lease names that replica, was renewed within 1.5 heartbeat
        intervals, and the replica's own lease is valid. A dead replica's sessions count as
        gone once its replica lease lapses (seconds), so failover is not held up."""
        if agent.replica is None or agent.replica == self.replica or agent.last_seen is None:
            return False
        now = datetime.now(UTC)
        if (now - agent.last_seen).total_seconds() > STALE_HEARTBEATS * self.heartbeat_interval:
            return False
        try:
            holder = await self.store.replicas.get(agent.replica)
        except NotFound:
            return False
        return holder.lease_until > now

    def admits(self, conn: AgentConnection, *, current_serial: str | None = None) -> bool:
        """Whether ``conn`` may become its server's session now (no live rival, or the rival
        gives way); if not, ``conn`` is closed with DUPLICATE_SESSION and False returned."""
        old = self._by_name.get(conn.name)
        if old is None or old is conn or self._gives_way(old, conn, current_serial):
            return True
        log.warning(
            "refusing a second session for %s from %s: session %s (%s) is live",
            conn.subject,
            conn.source or "?",
            old.session_id,
            old.source or "?",
        )
        conn.close(CloseCode.DUPLICATE_SESSION, f"{conn.subject} already has a live session")
        return False

    @staticmethod
    def _gives_way(old: AgentConnection, new: AgentConnection, current_serial: str | None) -> bool:
        return gives_way(old.core, new.serial, current_serial, trio.current_time())

    async def _forget(self, conn: AgentConnection) -> None:
        self._live.discard(conn)
        conn.abort_streams("unavailable", "agent disconnected")
        if self._by_name.get(conn.name) is not conn:
            self._notify()
            return  # replaced (the lease belongs to the new session) or never welcomed
        del self._by_name[conn.name]
        self._by_id.pop(conn.session_id, None)
        self._notify()
        log.info("agent %s disconnected (%s)", conn.subject, conn.close_reason or "peer closed")
        with trio.move_on_after(5):
            try:
                await self.store.agents.release(conn.server_id, replica=self.replica)
            except Exception as exc:  # the lease expires by itself; never fail a cleanup
                log.warning("cannot release the lease of %s: %s", conn.subject, exc)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # --- revocation and shutdown ---

    def _revoked(self, cert: Certificate) -> None:
        for conn in list(self._live):
            if conn.serial == cert.serial:
                log.info("closing %s: certificate %s revoked", conn.subject, cert.serial)
                conn.close(CloseCode.REVOKED, "certificate revoked")

    async def run(
        self, shutdown: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Watch revocations until ``shutdown``; then say goodbye to every agent and return.

        Every agent gets ``server-shutdown`` with a ``retry_after`` spread over
        ``shutdown_spread`` seconds (so a fleet does not come back at once), open streams end
        with an ``Error``, callers get ``drain_timeout`` seconds to leave, then sessions close
        with 1001. Cancellation stops watching at once.
        """
        unsubscribe = self.revocations.subscribe(self._revoked)
        try:
            task_status.started()
            await shutdown.wait()
            await self.shutdown()
        finally:
            unsubscribe()

    async def shutdown(self) -> None:
        self.closing = True
        self.stopping.set()
        conns = sorted(self._live, key=lambda c: c.name)
        if not conns:
            return
        log.info("saying goodbye to %d agent(s)", len(conns))
        low, high = self.shutdown_spread
        step = (high - low) / max(1, len(conns) - 1)
        async with trio.open_nursery() as nursery:
            for index, conn in enumerate(conns):
                nursery.start_soon(conn.goodbye, low + index * step, self.drain_timeout)
