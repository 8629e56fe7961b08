"""Sans-IO agent session: connection lifecycle, reconnect backoff, heartbeat schedule.

:class:`AgentSession` takes events (``start``, ``connected``, ``received``, ``connection_lost``,
``timer``) with the current monotonic time and returns commands for the driver to carry out.
It never sleeps: :meth:`AgentSession.next_deadline` says when the driver must call
:meth:`AgentSession.timer` again.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from attrs import define, frozen

from lab.proto.errors import CloseCode
from lab.proto.messages import Hello, Message, Ping, Pong, ServerShutdown, Welcome
from lab.proto.streams import InputStream, OutputStream

__all__ = [
    "AgentSession",
    "Backoff",
    "Close",
    "Command",
    "Connect",
    "Deliver",
    "InputStream",
    "OutputStream",
    "Send",
    "SendHeartbeat",
    "State",
]


class State(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


@frozen
class Connect:
    """Open a connection to labd, then report ``connected`` or ``connection_lost``."""


@frozen
class Send:
    message: Message


@frozen
class SendHeartbeat:
    """Gather current facts and send a ``heartbeat`` (facts are I/O, so the driver builds it)."""


@frozen
class Deliver:
    """A message for the agent's dispatcher (exec, logs, requests…)."""

    message: Message


@frozen
class Close:
    code: CloseCode
    reason: str = ""


Command = Connect | Send | SendHeartbeat | Deliver | Close


@define
class Backoff:
    """Exponential backoff with full jitter: delay = random() * min(cap, initial * 2**attempt)."""

    random: Callable[[], float]
    initial: float = 1.0
    cap: float = 30.0
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * 2.0 ** min(self.attempt, 32))
        self.attempt += 1
        return self.random() * ceiling

    def after_hint(self, retry_after: float) -> float:
        """Delay honouring a server ``retry_after``: never sooner, plus jitter of one step.

        The jitter spreads a fleet that got the same hint so it does not reconnect in lockstep.
        """
        return retry_after + self.random() * min(self.cap, max(self.initial, retry_after))

    def after_refusal(self, base: float) -> float:
        """Delay after labd refused our identity (401/403 at the handshake): ``base`` to
        twice that. Retrying sooner cannot help (the certificate is revoked, or the identity
        is not allowed) and every refusal costs labd a TLS handshake."""
        return base * (1.0 + self.random())

    def reset(self) -> None:
        self.attempt = 0


class AgentSession:
    """The agent's side of its one connection to labd.

    disconnected → (start) connecting → (welcome) connected → (lost) reconnecting →
    (timer at deadline) connecting → … ; ``stop`` from any state ends in stopped.
    """

    def __init__(
        self,
        hello: Hello,
        *,
        random: Callable[[], float],
        backoff_initial: float = 1.0,
        backoff_cap: float = 30.0,
        connect_timeout: float = 10.0,
        refused_backoff: float = 300.0,
    ) -> None:
        self.hello = hello
        self.state = State.DISCONNECTED
        self.backoff = Backoff(random, backoff_initial, backoff_cap)
        self.refused_backoff = refused_backoff
        self.connect_timeout = connect_timeout
        self.session_id: str | None = None
        self.heartbeat_interval: float | None = None
        self._retry_hint: float | None = None
        self._heartbeat_at: float | None = None
        self._reconnect_at: float | None = None
        self._connect_deadline: float | None = None

    # --- events ---

    def start(self, now: float) -> list[Command]:
        if self.state is not State.DISCONNECTED:
            raise RuntimeError(f"start() in state {self.state.value}")
        return self._connect(now)

    def connected(self, now: float) -> list[Command]:
        """The transport is open; introduce ourselves and wait for ``welcome``."""
        self._require(State.CONNECTING)
        return [Send(self.hello)]

    def received(self, msg: Message, now: float) -> list[Command]:
        if self.state not in (State.CONNECTING, State.CONNECTED):
            return []
        if isinstance(msg, Welcome):
            if self.state is State.CONNECTED:
                return self._lose(now, CloseCode.PROTOCOL_ERROR, "second welcome")
            self.state = State.CONNECTED
            self.session_id = msg.session_id
            self.heartbeat_interval = msg.heartbeat_interval
            self._connect_deadline = None
            self._heartbeat_at = now + msg.heartbeat_interval
            self.backoff.reset()
            return []
        if self.state is State.CONNECTING:
            # Nothing but welcome is meaningful before the session exists.
            return self._lose(now, CloseCode.PROTOCOL_ERROR, f"{msg.TYPE} before welcome")
        if isinstance(msg, ServerShutdown):
            self._retry_hint = msg.retry_after
            return [Close(CloseCode.GOING_AWAY, "server shutdown")]
        if isinstance(msg, Ping):
            return [Send(Pong(nonce=msg.nonce))]
        return [Deliver(msg)]

    def connection_lost(self, now: float, *, refused: bool = False) -> list[Command]:
        """The connection closed or could not be opened; schedule the next attempt.

        ``refused``: labd refused our certificate at the handshake (HTTP 401 or 403, e.g.
        revoked); the next attempt is minutes away (``refused_backoff`` to twice that).
        """
        if self.state in (State.STOPPED, State.DISCONNECTED, State.RECONNECTING):
            return []
        if refused:
            self._retry_hint = None
            self._reschedule(now, self.backoff.after_refusal(self.refused_backoff))
            return []
        self._schedule_reconnect(now)
        return []

    def timer(self, now: float) -> list[Command]:
        """Called at (or after) :meth:`next_deadline`; returns whatever is due."""
        if self.state is State.RECONNECTING and self._due(self._reconnect_at, now):
            return self._connect(now)
        if self.state is State.CONNECTING and self._due(self._connect_deadline, now):
            return self._lose(now, CloseCode.POLICY_VIOLATION, "no welcome in time")
        if self.state is State.CONNECTED and self._due(self._heartbeat_at, now):
            assert self.heartbeat_interval is not None
            # Schedule from now, not from the missed deadline, so a stalled driver does
            # not burst heartbeats to catch up.
            self._heartbeat_at = now + self.heartbeat_interval
            return [SendHeartbeat()]
        return []

    def stop(self) -> list[Command]:
        was_open = self.state in (State.CONNECTING, State.CONNECTED)
        self.state = State.STOPPED
        self._heartbeat_at = self._reconnect_at = self._connect_deadline = None
        return [Close(CloseCode.NORMAL, "agent stopping")] if was_open else []

    def next_deadline(self) -> float | None:
        """When :meth:`timer` must next be called; ``None``: only on the next event."""
        if self.state is State.RECONNECTING:
            return self._reconnect_at
        if self.state is State.CONNECTING:
            return self._connect_deadline
        if self.state is State.CONNECTED:
            return self._heartbeat_at
        return None

    # --- internals ---

    def _connect(self, now: float) -> list[Command]:
        self.state = State.CONNECTING
        self.session_id = None
        self._reconnect_at = None
        self._connect_deadline = now + self.connect_timeout
        return [Connect()]

    def _lose(self, now: float, code: CloseCode, reason: str) -> list[Command]:
        self._schedule_reconnect(now)
        return [Close(code, reason)]

    def _schedule_reconnect(self, now: float) -> None:
        if self._retry_hint is not None:
            delay = self.backoff.after_hint(self._retry_hint)
            self._retry_hint = None
        else:
            delay = self.backoff.next_delay()
        self._reschedule(now, delay)

    def _reschedule(self, now: float, delay: float) -> None:
        self.state = State.RECONNECTING
        self.session_id = None
        self._heartbeat_at = self._connect_deadline = None
        self._reconnect_at = now + delay

    def _require(self, state: State) -> None:
        if self.state is not state:
            raise RuntimeError(f"expected state {state.value}, in {self.state.value}")

    @staticmethod
    def _due(deadline: float | None, now: float) -> bool:
        return deadline is not None and now >= deadline
