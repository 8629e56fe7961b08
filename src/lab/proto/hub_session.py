"""Sans-IO agent session, labd's side: handshake, heartbeat silence, stream table, closing.

:class:`HubSession` is the other end of :class:`lab.proto.session.AgentSession`. It takes what
the agent sent (the WebSocket's text or binary messages, undecoded), timer ticks and the
answers to the lookups it asked for, each with the current monotonic time, and returns actions
for its driver (:mod:`lab.labd.hub.session`) to carry out. It never waits:
:meth:`HubSession.next_deadline` says when the driver must call :meth:`HubSession.timer`.

The handshake asks the driver one question at a time, so that a refusal costs no more
lookups than it needs and every refusal has its close code here::

    hello → FindServer → server_found / server_unknown (1008)
          → CheckRevoked → revocation (4005)
          → FindAgent → agent_found (4006 when another replica holds a fresh session)
          → Claim → claimed (the hub's registry closes a rival of a live session: 4006)
          → RenewLease, WriteFacts, Register → registered → Send(welcome)

Once welcomed: heartbeats renew the presence lease (facts at most every ``facts_interval``),
pings are answered, stream items are checked against the stream they name and handed to it,
and three heartbeat intervals without a message close the session (4000).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Generic, TypeAlias, TypeVar

import attrs
from attrs import frozen

from lab.errors import Unavailable
from lab.proto.errors import CloseCode, ProtocolError
from lab.proto.frames import Channel, DataFrame, decode_data
from lab.proto.messages import (
    Credit,
    Error,
    ExecExit,
    ExecStart,
    ExecStarted,
    Heartbeat,
    Hello,
    LogsEnd,
    LogsStart,
    Message,
    Ping,
    Pong,
    Response,
    Welcome,
    decode,
)
from lab.proto.streams import InputStream, OutputStream, StreamTable

__all__ = [
    "HELLO_TIMEOUT",
    "STALE_HEARTBEATS",
    "CancelRemote",
    "CheckRevoked",
    "Claim",
    "Close",
    "Deliver",
    "FindAgent",
    "FindServer",
    "HubSession",
    "Phase",
    "RecordHeartbeat",
    "Register",
    "RelayedStream",
    "RenewLease",
    "Report",
    "Send",
    "StdinCredit",
    "StreamItem",
    "WriteFacts",
    "gives_way",
]

HELLO_TIMEOUT = 10.0  # seconds an agent has to say hello after the upgrade
SILENCE_HEARTBEATS = 3
"""A session that received nothing for this many heartbeat intervals is closed (4000)."""
STALE_HEARTBEATS = 1.5
"""A session silent for this many heartbeat intervals gives way to a new one of its server."""

StartMessage = ExecStart | LogsStart
StreamItem = ExecStarted | DataFrame | ExecExit | LogsEnd | Error
"""What a relayed stream yields; ``ExecExit``, ``LogsEnd`` and ``Error`` are the last item."""


class RelayedStream:
    """The protocol state of one exec or log stream labd runs through an agent connection.

    The agent sees ``agent_stream_id`` (numbered per connection); the caller sees its start
    message's ``stream_id`` on every item. Output is checked for channel, sequence and credit
    (``input``); stdin is numbered and spent against the agent's stdin credit (``stdin``).
    """

    __slots__ = (
        "aborted",
        "agent_stream_id",
        "finished",
        "input",
        "start",
        "stdin",
        "stream_id",
    )

    def __init__(self, start: StartMessage, agent_stream_id: int, *, window: int) -> None:
        self.start = start
        self.stream_id = start.stream_id
        self.agent_stream_id = agent_stream_id
        self.input = InputStream(agent_stream_id, window=window)
        self.stdin = OutputStream(agent_stream_id, (Channel.STDIN,), window=window)
        self.finished = False  # the agent ended the stream (exit, logs-end or error)
        self.aborted: Error | None = None  # labd ended it (agent gone, shutdown)

    @property
    def is_exec(self) -> bool:
        return isinstance(self.start, ExecStart)

    @property
    def active(self) -> bool:
        """Neither the agent nor labd has ended the stream yet."""
        return not self.finished and self.aborted is None

    def data(self, frame: DataFrame) -> DataFrame:
        """Check an agent data frame (channel, sequence, credit) and renumber it."""
        allowed = (Channel.STDOUT, Channel.STDERR) if self.is_exec else (Channel.LOG,)
        if frame.channel not in allowed:
            raise ProtocolError(
                f"channel {frame.channel.name} is not an output of stream {frame.stream_id}",
                close_code=CloseCode.UNSUPPORTED_DATA,
            )
        payload = self.input.received(frame)
        return DataFrame(
            stream_id=self.stream_id, channel=frame.channel, seq=frame.seq, payload=payload
        )

    def message(self, msg: ExecStarted | ExecExit | LogsEnd | Error) -> StreamItem:
        """Check a stream message from the agent and renumber it; the last one ends it."""
        if self.finished:
            raise ProtocolError(f"{msg.TYPE} on stream {msg.stream_id} after it ended")
        if isinstance(msg, ExecStarted | ExecExit) and not self.is_exec:
            raise ProtocolError(f"{msg.TYPE} on log stream {msg.stream_id}")
        if isinstance(msg, LogsEnd) and self.is_exec:
            raise ProtocolError(f"logs-end on exec stream {msg.stream_id}")
        if isinstance(msg, ExecExit):
            self.input.exited(msg)
        if not isinstance(msg, ExecStarted):
            self.finished = True
        return attrs.evolve(msg, stream_id=self.stream_id)

    def abort(self, code: str, message: str) -> bool:
        """End the stream from labd's side (its caller's last item is an ``Error``); False
        when it had already ended."""
        if not self.active:
            return False
        self.aborted = Error(stream_id=self.stream_id, code=code, message=message)
        return True


S = TypeVar("S", bound=RelayedStream)


class Phase(enum.Enum):
    HELLO = "hello"  # waiting for the agent's hello
    ADMITTING = "admitting"  # the driver answers the handshake's lookups one by one
    OPEN = "open"  # welcomed: heartbeats and streams
    CLOSED = "closed"


# --- actions: what the driver does ---


@frozen
class Send:
    """Queue ``message`` for the agent (in order, behind what is already queued)."""

    message: Message


@frozen
class CancelRemote:
    """Queue ``stream-cancel`` for ``stream_id`` without waiting (the caller left)."""

    stream_id: int


@frozen
class Close:
    """End the session with ``code``; ``error``: the agent broke the protocol (log, audit)."""

    code: CloseCode
    reason: str
    error: ProtocolError | None = None


@frozen
class FindServer:
    """Look up the server the certificate names: :meth:`HubSession.server_found` or
    :meth:`HubSession.server_unknown`."""


@frozen
class CheckRevoked:
    """Whether the certificate's serial is revoked: :meth:`HubSession.revocation`."""


@frozen
class FindAgent:
    """The server's enrolled agent record (its current serial) and, in a cluster, which
    other live replica holds a fresh session of it: :meth:`HubSession.agent_found`."""


@frozen
class Claim:
    """Ask the hub's registry whether this session may become the server's one session:
    :meth:`HubSession.claimed`, or a live rival makes the registry close it (4006)."""

    current_serial: str | None


@frozen
class RenewLease:
    """Extend the presence lease (three heartbeat intervals from now)."""


@frozen
class RecordHeartbeat:
    """A heartbeat arrived: note its (wall clock) time and renew the presence lease."""


@frozen
class WriteFacts:
    """Store the server's facts."""

    facts: dict[str, Any]


@frozen
class Register:
    """Make this session the server's one session (the registry decides again, as the
    lease and facts writes let a rival in): :meth:`HubSession.registered`, or closed (4006)."""

    current_serial: str | None


@frozen
class Deliver(Generic[S]):
    """Hand ``item`` to the caller of ``stream`` (never waits)."""

    stream: S
    item: StreamItem


@frozen
class StdinCredit(Generic[S]):
    """The agent granted ``stream`` more stdin credit (already counted): wake its writer."""

    stream: S


@frozen
class Report:
    """The agent reports an error of its own (not about a stream): log it."""

    error: Error


Action: TypeAlias = (
    Send
    | CancelRemote
    | Close
    | FindServer
    | CheckRevoked
    | FindAgent
    | Claim
    | RenewLease
    | RecordHeartbeat
    | WriteFacts
    | Register
    | Deliver[S]
    | StdinCredit[S]
    | Report
)


def gives_way(
    old: HubSession[Any], new_serial: str, current_serial: str | None, now: float
) -> bool:
    """Whether the live session ``old`` of a server gives way to a newcomer holding
    ``new_serial``: when ``old`` is already closing, when it has been silent for
    ``STALE_HEARTBEATS`` intervals (a half-dead connection of an agent that reconnected), or
    when only the newcomer holds the server's current certificate (after a renewal or a
    replace enrollment). Otherwise the newcomer is refused (4006): two holders of one identity
    must not knock each other off in turn."""
    if old.closing:
        return True
    if old.idle_for(now) > STALE_HEARTBEATS * old.heartbeat_interval:
        return True
    return (
        current_serial is not None and new_serial == current_serial and old.serial != current_serial
    )


class HubSession(Generic[S]):
    """labd's side of one agent connection, from the upgrade to the close."""

    # One per connected agent, 10,000 per labd: no instance dict.
    __slots__ = (
        "_current_serial",
        "_facts_written",
        "_hello",
        "_hello_deadline",
        "close_code",
        "close_reason",
        "facts",
        "facts_interval",
        "heartbeat_interval",
        "labels",
        "last_received",
        "name",
        "phase",
        "serial",
        "server_id",
        "session_id",
        "streams",
        "version",
    )

    def __init__(
        self,
        *,
        name: str,
        serial: str,
        session_id: str,
        heartbeat_interval: float,
        facts_interval: float,
        now: float,
        hello_timeout: float = HELLO_TIMEOUT,
    ) -> None:
        self.name = name
        self.serial = serial
        self.session_id = session_id
        self.heartbeat_interval = heartbeat_interval
        self.facts_interval = facts_interval
        self.phase = Phase.HELLO
        self.close_code: CloseCode | None = None
        self.close_reason = ""
        self.server_id = ""
        self.version = ""
        self.facts: dict[str, Any] = {}
        self.labels: dict[str, str] = {}
        self.streams = StreamTable[S]()  # labd numbers them
        self.last_received = now
        self._hello: Hello | None = None
        self._current_serial: str | None = None
        self._hello_deadline = now + hello_timeout
        self._facts_written = -float("inf")

    @property
    def subject(self) -> str:
        return f"server/{self.name}"

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    @property
    def welcomed(self) -> bool:
        return self.phase is Phase.OPEN

    def idle_for(self, now: float) -> float:
        """Seconds since the last message from the agent."""
        return now - self.last_received

    # --- what the agent sent ---

    def received(self, data: str | bytes | bytearray, now: float) -> list[Action[S]]:
        """One WebSocket message from the agent. A protocol error closes the session with
        its code (a ``Close`` carrying the error); after a close, nothing is looked at."""
        if self.closing:
            return []
        self.last_received = now
        try:
            item = _decode(data)
            if self.phase is Phase.HELLO:
                return self._hello_received(item)
            if self.phase is not Phase.OPEN:
                raise RuntimeError(f"received() in phase {self.phase.value}")
            if isinstance(item, DataFrame):
                return self._data(item)
            return self._message(item, now)
        except ProtocolError as exc:
            return self.close(exc.close_code, exc.message, error=exc)

    def _hello_received(self, item: Message | DataFrame) -> list[Action[S]]:
        if not isinstance(item, Hello):
            kind = "data frame" if isinstance(item, DataFrame) else item.TYPE
            raise ProtocolError(f"expected hello, got {kind}")
        self.phase = Phase.ADMITTING
        self._hello = item
        self.version = item.version
        self.labels = dict(item.labels)
        return [FindServer()]

    def _data(self, frame: DataFrame) -> list[Action[S]]:
        stream = self.streams.get(frame.stream_id)
        if stream is None:
            return []  # the caller already left; late items are dropped
        return [Deliver(stream, stream.data(frame))]

    def _message(self, msg: Message, now: float) -> list[Action[S]]:
        if isinstance(msg, ExecStarted | ExecExit | LogsEnd) or (
            isinstance(msg, Error) and msg.stream_id is not None
        ):
            assert msg.stream_id is not None
            stream = self.streams.get(msg.stream_id)
            return [] if stream is None else [Deliver(stream, stream.message(msg))]
        if isinstance(msg, Credit):
            stream = self.streams.get(msg.stream_id)
            if stream is None:
                return []
            stream.stdin.grant(msg)
            return [StdinCredit(stream)]
        if isinstance(msg, Heartbeat):
            return self._heartbeat(msg, now)
        if isinstance(msg, Ping):
            return [Send(Pong(nonce=msg.nonce))]
        if isinstance(msg, Pong | Response):
            return []  # answers to nothing we asked for yet
        if isinstance(msg, Error):
            return [Report(msg)]
        raise ProtocolError(f"{msg.TYPE} is not a message an agent sends")

    def _heartbeat(self, msg: Heartbeat, now: float) -> list[Action[S]]:
        if msg.version:
            self.version = msg.version
        self.facts.update(
            load=list(msg.load),
            uptime=msg.uptime,
            memory_total=msg.memory_total,
            memory_available=msg.memory_available,
            agent_version=self.version,
        )
        actions: list[Action[S]] = [RecordHeartbeat()]
        if now - self._facts_written >= self.facts_interval:
            actions.append(self._write_facts(now))
        return actions

    # --- the handshake's answers ---

    # Each answer is ignored once the session is closing: a revocation, the registry's
    # refusal or a store failure may close it while the driver is looking something up.

    def server_unknown(self) -> list[Action[S]]:
        if self.closing:
            return []
        self._require(Phase.ADMITTING)
        message = f"server {self.name!r} is not registered"
        error = ProtocolError(message, close_code=CloseCode.POLICY_VIOLATION)
        return self.close(CloseCode.POLICY_VIOLATION, message, error=error)

    def server_found(self, server_id: str, facts: dict[str, Any]) -> list[Action[S]]:
        """The server's id and stored facts (the hello's facts win)."""
        if self.closing:
            return []
        hello = self._require(Phase.ADMITTING)
        self.server_id = server_id
        self.facts = {**facts, **hello.facts}
        return [CheckRevoked()]

    def revocation(self, revoked: bool) -> list[Action[S]]:
        if self.closing:
            return []
        self._require(Phase.ADMITTING)
        if revoked:
            return self.close(CloseCode.REVOKED, "certificate revoked")
        return [FindAgent()]

    def agent_found(self, current_serial: str | None, held_by: str | None) -> list[Action[S]]:
        """The serial of the server's current certificate (None: no agent record) and the
        replica holding a fresh session elsewhere (None: none)."""
        if self.closing:
            return []
        self._require(Phase.ADMITTING)
        if held_by is not None:
            return self.close(
                CloseCode.DUPLICATE_SESSION,
                f"{self.subject} has a live session on replica {held_by}",
            )
        self._current_serial = current_serial
        return [Claim(current_serial)]

    def claimed(self, now: float) -> list[Action[S]]:
        """The registry granted the :class:`Claim` (a refusal closes the session instead);
        only now does the session touch the lease and the facts."""
        if self.closing:
            return []
        self._require(Phase.ADMITTING)
        return [RenewLease(), self._write_facts(now), Register(self._current_serial)]

    def registered(self) -> list[Action[S]]:
        """The registry took the session (a refusal closes it instead); the welcome makes it
        live for the agent."""
        if self.closing:
            return []
        self._require(Phase.ADMITTING)
        self.phase = Phase.OPEN
        self._hello = None  # its facts and labels were copied; not kept for the session's life
        welcome = Welcome(session_id=self.session_id, heartbeat_interval=self.heartbeat_interval)
        return [Send(welcome)]

    def _require(self, phase: Phase) -> Hello:
        if self.phase is not phase or self._hello is None:
            raise RuntimeError(f"expected phase {phase.value}, in {self.phase.value}")
        return self._hello

    def _write_facts(self, now: float) -> WriteFacts:
        self._facts_written = now
        return WriteFacts(dict(self.facts))

    # --- time ---

    def next_deadline(self) -> float | None:
        """When :meth:`timer` must next be called; None: only on the next event."""
        if self.closing:
            return None
        if self.phase is Phase.HELLO:
            return self._hello_deadline
        if self.phase is Phase.OPEN:
            return self.last_received + SILENCE_HEARTBEATS * self.heartbeat_interval
        return None  # admitting: the driver's lookups have their own deadlines

    def timer(self, now: float) -> list[Action[S]]:
        """Called at (or after) :meth:`next_deadline`; closes a session that is overdue."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        if self.phase is Phase.HELLO:
            message = "no hello in time"
            error = ProtocolError(message, close_code=CloseCode.POLICY_VIOLATION)
            return self.close(CloseCode.POLICY_VIOLATION, message, error=error)
        limit = SILENCE_HEARTBEATS * self.heartbeat_interval
        return self.close(CloseCode.HEARTBEAT_TIMEOUT, f"no heartbeat for {limit:g}s")

    # --- closing and streams (labd's side) ---

    def close(
        self, code: CloseCode, reason: str, *, error: ProtocolError | None = None
    ) -> list[Action[S]]:
        """End the session with ``code``; the first reason wins (later calls: nothing)."""
        if self.closing:
            return []
        self.close_code = code
        self.close_reason = reason
        self.phase = Phase.CLOSED
        return [Close(code, reason, error)]

    def open_stream(self, make: Callable[[int], S]) -> S:
        """A new stream in the table, numbered by ``make(agent_stream_id)``; the caller then
        sends its start. Raises :class:`Unavailable` once the session is closing."""
        if self.closing:
            raise Unavailable("agent not connected", details={"server": self.name})
        stream_id = self.streams.next_id
        return self.streams.open(stream_id, make(stream_id))

    def end_stream(self, stream: S) -> list[Action[S]]:
        """The caller left ``stream``: forget it, and cancel the remote side if it still runs."""
        self.streams.close(stream.agent_stream_id)
        if stream.active and not self.closing:
            return [CancelRemote(stream.agent_stream_id)]
        return []


def _decode(data: str | bytes | bytearray) -> Message | DataFrame:
    if isinstance(data, str):
        return decode(data)
    if isinstance(data, bytes | bytearray):
        return decode_data(data)
    raise ProtocolError("empty or unreadable frame")
