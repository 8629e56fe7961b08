"""Relaying exec and log streams between a CLI WebSocket and agent streams of the hub.

One CLI connection (``/ws/exec`` or ``/ws/logs``) carries one or more *targets*, each a stream
on the CLI connection (ids 1, 2, … in target order) bridged to one stream the hub opened on that
server's agent connection. Flow control has two legs and labd owns both, so its memory per
stream is bounded by one window whatever either peer does:

- agent → labd: the agent may send one window ahead (256 KiB initially; labd opens it up to
  4 MiB when few streams share the connection, see ``grown_window``); labd grants it more only
  after it forwarded the bytes to the CLI;
- labd → CLI: labd forwards only within the credit the CLI granted as it wrote to its stdout.

stdin goes the other way: labd grants the CLI stdin credit after the hub accepted the bytes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from lab.errors import LabError, NotFound, PermissionDenied, Unavailable
from lab.labd.access.auth import check
from lab.labd.audit.entries import record
from lab.labd.relay.forwarding import ForwardingHub
from lab.proto import Channel, DataFrame
from lab.proto.errors import CloseCode, ProtocolError
from lab.proto.messages import (
    DEFAULT_WINDOW,
    Credit,
    Error,
    ExecExit,
    ExecStart,
    ExecStarted,
    LogsEnd,
    LogsStart,
    Message,
    Resize,
    Signal,
    StdinClose,
    StreamCancel,
)
from lab.proto.streams import OutputStream, ReceiveWindow, SequenceCheck

if TYPE_CHECKING:
    from lab.labd.access.auth import Principal
    from lab.labd.access.user_sessions import UserSession
    from lab.labd.context import LabdContext

log = logging.getLogger(__name__)

Incoming = ExecStarted | DataFrame | ExecExit | LogsEnd | Error
"""What an agent stream yields."""

Uplink = bytes | Credit | Signal | Resize | StdinClose
"""What the relay sends into an agent stream: stdin bytes or a control message."""

# Control messages queued per target between the CLI reader and the agent stream.
UPLINK_QUEUE = 16
# Seconds the end-of-stream audit entry may take after the CLI is gone.
AUDIT_GRACE = 5.0


class AgentStream(Protocol):
    """One stream the hub opened on an agent connection."""

    stream_id: int

    async def send(self, item: Uplink, /) -> None: ...

    def __aiter__(self) -> AsyncIterator[Incoming]: ...


class Hub(Protocol):
    """The part of the agent hub the relay uses (``ctx().hub``)."""

    def is_online(self, name: str, /) -> bool: ...

    def agent_stream(
        self, server_name: str, start: ExecStart | LogsStart, /
    ) -> AbstractAsyncContextManager[AgentStream]: ...


async def _held_elsewhere_now(context: LabdContext, name: str) -> bool:
    """Whether another replica holds ``name``'s agent, by its lease read now. This replica's
    view of the leases is up to a poll old, so an agent that has just connected elsewhere
    would otherwise be "not connected" for up to a second; only a miss pays the read."""
    cluster = getattr(context, "cluster", None)
    if cluster is None:
        return False
    await cluster.refresh_holders()
    return cluster.holder_of(name) is not None


def current_hub(context: LabdContext) -> Hub:
    """The agent hub of ``context``; Unavailable while labd runs without one.

    With a cluster membership, streams for agents held by another replica are forwarded there
    (:class:`lab.labd.relay.forwarding.ForwardingHub`).
    """
    local = getattr(context, "hub", None)
    cluster = getattr(context, "cluster", None)
    if local is not None and cluster is not None:
        return ForwardingHub(local, cluster)
    hub: Hub | None = local
    if hub is None:
        raise Unavailable("this labd has no agent hub")
    return hub


SendFn = Callable[[Message | bytes], Awaitable[None]]


@attrs.define(kw_only=True)
class Target:
    """What one stream of a CLI connection is about."""

    stream_id: int  # on the CLI connection
    server: str
    start: ExecStart | LogsStart

    @property
    def resource(self) -> str:
        return f"server/{self.server}"

    @property
    def action(self) -> str:
        return "exec:run" if isinstance(self.start, ExecStart) else "logs:read"


class Relay:
    """One target: checks, audits, opens the agent stream and pumps both ways.

    :meth:`run` returns when the stream ended (exit, logs-end, error) and never raises a
    :class:`LabError`: a refusal or failure becomes an ``error`` message on the CLI stream.
    Cancellation (the CLI went away) leaves the ``agent_stream`` block, which kills the remote
    process group, and records the end in the audit log under a shield.
    """

    def __init__(
        self,
        context: LabdContext,
        who: Principal,
        target: Target,
        send: SendFn,
        *,
        source: str = "",
        window: int | None = None,
        agent_window: int = DEFAULT_WINDOW,
        session: UserSession | None = None,
    ) -> None:
        self.context = context
        # The CLI connection carrying this stream; its reason says why labd ended it.
        self.session = session
        self.who = who
        self.target = target
        self._send = send
        self.source = source
        kwargs: dict[str, Any] = {} if window is None else {"window": window}
        start = target.start
        if isinstance(start, ExecStart):
            channels = (Channel.STDOUT,) if start.tty else (Channel.STDOUT, Channel.STDERR)
        else:
            channels = (Channel.LOG,)
        # Towards the CLI: the credit it granted us and our sequence numbers.
        self.down = OutputStream(target.stream_id, channels, **kwargs)
        self._down_changed = trio.Event()
        # From the agent: when to grant it more (after forwarding half a window to the CLI).
        # The agent starts with the protocol's window; what agent_window adds beyond it is
        # granted once the stream is open.
        self._agent_extra = max(0, agent_window - DEFAULT_WINDOW)
        self.agent_window = ReceiveWindow(
            agent_window if self._agent_extra else window or DEFAULT_WINDOW
        )
        # stdin from the CLI: sequence numbers and the credit we granted it.
        self.stdin_seq = SequenceCheck()
        self.stdin_window = ReceiveWindow(**kwargs)
        up_send, self._up_recv = trio.open_memory_channel[Uplink](UPLINK_QUEUE)
        self._up_send = up_send
        self._scope = trio.CancelScope()
        self.finished = False
        self.result: dict[str, Any] = {}

    # --- called by the CLI reader (never blocks on the agent for credit) ---

    def grant(self, msg: Credit) -> None:
        self.down.grant(msg)
        self._down_changed.set()
        self._down_changed = trio.Event()

    async def control(self, msg: Signal | Resize | StdinClose | StreamCancel) -> None:
        if isinstance(msg, StreamCancel):
            self._scope.cancel()
            return
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._up_send.send(msg)

    async def stdin(self, frame: DataFrame) -> None:
        if not isinstance(self.target.start, ExecStart) or not self.target.start.stdin:
            raise ProtocolError(
                f"stream {frame.stream_id} was not started with stdin",
                close_code=CloseCode.UNKNOWN_STREAM,
            )
        self.stdin_seq.check(frame)
        self.stdin_window.received(len(frame.payload))
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._up_send.send(frame.payload)

    # --- the stream's life ---

    async def run(self) -> None:
        target = self.target
        started = time.monotonic()
        try:
            with self._scope:
                try:
                    await self._admit()
                except LabError as exc:
                    await self._fail(exc)
                    return
                await self._audit("success", started, {"phase": "start", **_describe(target.start)})
                with self._counted():
                    await self._relay(started)
            if self._scope.cancelled_caught and not self.finished:
                self.finished = True
                await self._audit("success", started, {"phase": "end", "cancelled": True})
                await self._send(
                    Error(stream_id=target.stream_id, code="cancelled", message="stream cancelled")
                )
        finally:
            self._up_send.close()
            if not self.finished:
                # The CLI left or cancelled, or labd ended the session (revocation): the hub's
                # block already killed the remote group.
                details = {"phase": "end", "cancelled": True, **self.result}
                if self.session is not None and self.session.reason is not None:
                    details["reason"] = self.session.reason
                with trio.CancelScope(shield=True), trio.move_on_after(AUDIT_GRACE):
                    await self._audit("error", started, details)

    def _counted(self) -> contextlib.AbstractContextManager[None]:
        """An exec counts in labd_exec_sessions while it runs; a log stream does not."""
        if isinstance(self.target.start, ExecStart):
            return self.context.metrics.track_exec()
        return contextlib.nullcontext()

    async def _admit(self) -> None:
        target = self.target
        try:
            check(self.who, target.action, target.resource)
        except PermissionDenied:
            with trio.CancelScope(shield=True):
                await self._audit("denied", time.monotonic(), _describe(target.start))
            raise
        hub = current_hub(self.context)
        if not hub.is_online(target.server) and not await _held_elsewhere_now(
            self.context, target.server
        ):
            # Unknown wins over offline: 404 for a name that was never enrolled.
            await self.context.store.servers.get_by_name(target.server)
            raise Unavailable("agent not connected", details={"server": target.server})

    async def _fail(self, exc: LabError) -> None:
        self.finished = True
        self.result = {"error": exc.code}
        await self._send(Error(stream_id=self.target.stream_id, code=exc.code, message=exc.message))

    async def _relay(self, started: float) -> None:
        hub = current_hub(self.context)
        broken: ProtocolError | None = None
        try:
            async with (
                hub.agent_stream(self.target.server, self.target.start) as stream,
                trio.open_nursery() as nursery,
            ):
                if self._agent_extra > 0:
                    await stream.send(Credit(stream_id=stream.stream_id, bytes=self._agent_extra))
                nursery.start_soon(self._uplink, stream)
                try:
                    await self._downlink(stream)
                except ProtocolError as exc:
                    broken = exc  # leaving the block kills the remote process
                nursery.cancel_scope.cancel()
        except (NotFound, Unavailable) as exc:
            # The agent went away between the check and the open; the start was audited.
            await self._fail(exc)
            await self._audit("error", started, {"phase": "end", "error": exc.code})
            return
        if broken is not None:
            log.warning("agent stream of %s broke the protocol: %s", self.target.server, broken)
            await self._fail(broken)
            await self._audit("error", started, {"phase": "end", "error": broken.message})
            return
        self.finished = True
        await self._audit("success", started, {"phase": "end", **self.result})

    async def _downlink(self, stream: AgentStream) -> None:
        sid = self.target.stream_id
        async for item in stream:
            if isinstance(item, DataFrame):
                await self._forward(stream, item)
            elif isinstance(item, ExecStarted):
                self.result["pid"] = item.pid
                await self._send(ExecStarted(stream_id=sid, pid=item.pid))
            elif isinstance(item, ExecExit):
                exit_msg = attrs.evolve(item, stream_id=sid, bytes_out=self.down.bytes_out)
                self.result.update(
                    code=item.code,
                    signal=item.signal,
                    bytes_out=self.down.bytes_out,
                    bytes_dropped=item.bytes_dropped,
                    timed_out=item.timed_out,
                )
                await self._send(exit_msg)
                return
            elif isinstance(item, LogsEnd):
                self.result["bytes_out"] = self.down.bytes_out
                await self._send(LogsEnd(stream_id=sid))
                return
            elif isinstance(item, Error):
                self.result["error"] = item.code
                await self._send(Error(stream_id=sid, code=item.code, message=item.message))
                return
        self.result["error"] = "unavailable"
        await self._send(Error(stream_id=sid, code="unavailable", message="agent disconnected"))

    async def _forward(self, stream: AgentStream, frame: DataFrame) -> None:
        # The hub checked the frame against the agent's credit; we only decide when to grant.
        view = memoryview(frame.payload)
        while view:
            while self.down.window.available == 0:
                await self._down_changed.wait()
            n = min(len(view), self.down.window.available)
            # The whole rest fits the credit (the usual case): send it without another copy.
            chunk = frame.payload if n == len(frame.payload) else bytes(view[:n])
            await self._send(self.down.data(frame.channel, chunk))
            view = view[n:]
        grant = self.agent_window.consumed(len(frame.payload))
        if grant:
            await stream.send(Credit(stream_id=stream.stream_id, bytes=grant))

    async def _uplink(self, stream: AgentStream) -> None:
        # A send fails only when the agent stream is gone; the downlink reports that.
        with contextlib.suppress(LabError, trio.BrokenResourceError, trio.ClosedResourceError):
            await self._pump_up(stream)

    async def _pump_up(self, stream: AgentStream) -> None:
        sid = self.target.stream_id
        async for item in self._up_recv:
            if isinstance(item, bytes):
                await stream.send(item)
                grant = self.stdin_window.consumed(len(item))
                if grant:
                    await self._send(Credit(stream_id=sid, bytes=grant))
            else:
                await stream.send(attrs.evolve(item, stream_id=stream.stream_id))

    async def _audit(self, result: str, started: float, details: dict[str, Any]) -> None:
        await record(
            self.context,
            action=self.target.action,
            resource=self.target.resource,
            result=result,
            principal=self.who,
            source=self.source,
            duration_ms=(time.monotonic() - started) * 1000,
            details=details,
        )


def _describe(start: ExecStart | LogsStart) -> dict[str, Any]:
    if isinstance(start, ExecStart):
        return {
            "argv": list(start.argv),
            "tty": start.tty,
            "stdin": start.stdin,
            "timeout": start.timeout,
            "cwd": start.cwd,
            "env": sorted(start.env),  # names only: values may be secrets
        }
    return {
        "unit": start.unit,
        "source": start.source,
        "since": start.since,
        "lines": start.lines,
        "follow": start.follow,
    }


__all__ = [
    "AgentStream",
    "Hub",
    "Incoming",
    "Relay",
    "Target",
    "Uplink",
    "current_hub",
]
