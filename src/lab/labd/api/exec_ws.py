"""``/ws/exec`` and ``/ws/logs``: remote exec and log streaming for user certificates.

The first client message is a ``request`` naming the targets and carrying the ``exec-start``
(or ``logs-start``) template; labd answers with a ``response`` listing one stream per target,
then relays each target's stream (see :mod:`lab.labd.relay.relay` and docs/protocol.md). RBAC is
checked per target here, since the resource (``server/NAME``) is only known from that message.
"""

from __future__ import annotations

import logging

import attrs
import trio
from quart import Blueprint, websocket

from lab.errors import Invalid, LabError, NotFound
from lab.labd.access.auth import principal, requires
from lab.labd.access.user_sessions import DISABLED, REVOKED, UserSession
from lab.labd.audit.entries import record
from lab.labd.context import ctx
from lab.labd.relay.relay import Relay, SendFn, Target
from lab.model.converter import text_reason
from lab.proto import decode, decode_data, encode
from lab.proto.errors import CloseCode, ProtocolError
from lab.proto.messages import (
    Credit,
    ExecStart,
    LogsStart,
    Message,
    Ping,
    Pong,
    Request,
    Resize,
    Response,
    RpcError,
    Signal,
    StdinClose,
    StreamCancel,
)
from lab.proto.requests import StreamRequest, from_request
from lab.proto.streams import StreamTable, grown_window

log = logging.getLogger(__name__)

bp = Blueprint("exec_ws", __name__)


# Seconds a client has to send its first message after the handshake.
FIRST_MESSAGE_TIMEOUT = 10.0
MAX_PARALLEL = 256
MAX_TARGETS = 10_000
# Messages queued for the client's writer (data frames are at most one MAX_PAYLOAD each).
OUTBOX_SIZE = 32
# Seconds for the close frame to a client that stopped answering.
CLOSE_TIMEOUT = 2.0
# The session's reason when the client stopped answering pings (audited per stream).
PING_TIMEOUT = "ping timeout"


@bp.websocket("/ws/exec")
@requires("user", per_target=True)
async def exec_ws() -> None:
    await _serve("exec")


@bp.websocket("/ws/logs")
@requires("user", per_target=True)
async def logs_ws() -> None:
    await _serve("logs")


class _Closing(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def _serve(method: str) -> None:
    """Serve one CLI connection, registered as a live user session for its whole life.

    Revoking the caller's certificate or disabling the user cancels the session's scope: the
    relays leave their agent streams (which kills the remote process groups) and the socket
    closes with :attr:`CloseCode.REVOKED`. A client that answers nothing for
    ``client_ping_timeout`` seconds is ended the same way (reason ``ping timeout``). When the
    client disconnects, quart-trio cancels this handler: one INFO line, the relays' ``finally``
    blocks send ``stream-cancel`` to the agents and audit the end.
    """
    who = principal()
    talked: list[bool] = []  # set once every stream ended: a close after that is no news
    try:
        with (
            trio.CancelScope() as scope,
            ctx().user_sessions.session(serial=who.serial, user=who.name, scope=scope) as session,
        ):
            # Revoked between the handshake's check and the registration: end it all the same.
            if await ctx().revocations.is_revoked(who.serial):
                session.close(REVOKED)
            await _converse(method, session, talked)
    except* trio.Cancelled:
        # The client went away (or labd is stopping); nurseries wrap the Cancelled in groups.
        level = logging.DEBUG if talked else logging.INFO
        where = websocket.remote_addr or "?"
        log.log(level, "%s: %s (%s) disconnected", method, who.subject, where)
        raise
    if session.reason == PING_TIMEOUT:
        log.info("%s: %s answered no ping for %gs, ended", method, who.subject, _ping()[1])
        with trio.move_on_after(CLOSE_TIMEOUT):
            await websocket.close(CloseCode.HEARTBEAT_TIMEOUT, PING_TIMEOUT)
    elif session.reason is not None:
        await websocket.close(CloseCode.REVOKED, _CLOSE_REASONS.get(session.reason, session.reason))


_CLOSE_REASONS = {REVOKED: "certificate revoked", DISABLED: "user disabled"}


def _ping() -> tuple[float, float]:
    """(interval, timeout) of labd's pings to clients; a timeout of 0 disables them."""
    config = ctx().config
    return config.client_ping_interval, config.client_ping_timeout


async def _converse(method: str, session: UserSession, talked: list[bool]) -> None:
    """The conversation; every message to the client goes through one writer task.

    Relays only queue (a bounded outbox): a relay that is cancelled (its client sent
    ``stream-cancel``, or left) is never interrupted inside a socket write, and no relay holds
    a lock another stream needs.
    """
    outbox, queued = trio.open_memory_channel[str | bytes](OUTBOX_SIZE)

    async def send(item: Message | bytes) -> None:
        data = item if isinstance(item, bytes) else encode(item)
        await outbox.send(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_write, queued)
        async with outbox:
            closing = await _talk(method, session, send)
        talked.append(True)
    # The writer flushed everything queued; now the close frame.
    if closing is not None:
        await websocket.close(*closing)


async def _write(queued: trio.MemoryReceiveChannel[str | bytes]) -> None:
    async with queued:
        async for data in queued:
            await websocket.send(data)


async def _talk(method: str, session: UserSession, send: SendFn) -> tuple[int, str] | None:
    """Serve the request; the close code and reason to end the connection with."""
    try:
        request = await _first_message(method)
        try:
            typed = _typed(method, request)
            targets, parallel = await _targets(typed)
        except LabError as exc:
            error = RpcError(code=exc.code, message=exc.message, details=exc.details)
            if isinstance(exc, Invalid):
                await _audit_refusal(method, exc)
            await send(Response(request_id=request.request_id, error=error))
            code = exc.close_code if isinstance(exc, ProtocolError) else CloseCode.NORMAL
            raise _Closing(code, exc.code) from None
        streams = [{"stream_id": t.stream_id, "server": t.server} for t in targets]
        await send(Response(request_id=request.request_id, result={"streams": streams}))
        # Only clients that say they answer pings get them (older labctl would choke).
        broken = await _relay_all(targets, parallel, send, session, keepalive=typed.keepalive)
        if broken is not None:
            raise broken
    except ProtocolError as exc:
        log.info("%s: closing a client connection: %s", method, exc.message)
        return int(exc.close_code), exc.message[:120]
    except _Closing as closing:
        return closing.code, closing.reason[:120]
    if session.reason is not None:
        return None  # _serve closes with the reason's code
    return int(CloseCode.NORMAL), "done"


async def _audit_refusal(method: str, exc: Invalid) -> None:
    """A request refused for its content is audited like a refused REST call."""
    await record(
        ctx(),
        action=f"servers:{method}",
        resource="",
        result="error",
        principal=principal(),
        source=websocket.remote_addr or "",
        details={"error": exc.code, "message": exc.message[:500], **exc.details},
    )


async def _first_message(method: str) -> Request:
    with trio.move_on_after(FIRST_MESSAGE_TIMEOUT):
        data = await websocket.receive()
        if not isinstance(data, str):
            raise ProtocolError("the first message must be a request naming the targets")
        msg = decode(data)
        if not isinstance(msg, Request) or msg.method != method:
            raise ProtocolError(f"the first message must be a {method!r} request")
        return msg
    raise _Closing(CloseCode.POLICY_VIOLATION, "no request in time")


def _typed(method: str, request: Request) -> StreamRequest:
    """The request's typed form; Invalid naming the fields when it is not one."""
    try:
        typed = from_request(request)
    except ProtocolError as exc:
        # The client's request, not the connection, is wrong: an error reply names the field.
        fields = exc.details.get("fields", [exc.message])
        reason = text_reason(fields)
        details = {"fields": fields, **({"reason": reason} if reason else {})}
        raise Invalid(f"not a valid {method} request", details=details) from None
    return typed


async def _targets(typed: StreamRequest) -> tuple[list[Target], int]:
    """Resolve the request's servers (names and/or a label selector) into streams 1..N."""
    method = typed.METHOD
    names, labels, parallel = list(typed.targets), typed.labels, typed.parallel
    start: ExecStart | LogsStart = typed.start
    if isinstance(start, ExecStart):
        cap = ctx().config.exec_output_cap
        if cap and (start.output_cap is None or start.output_cap > cap):
            start = attrs.evolve(start, output_cap=cap)
    if labels:
        if method != "exec":
            raise Invalid("logs streams one server; name it", details={"fields": ["labels"]})
        matched = await ctx().store.servers.list(labels=labels)
        names = [*names, *sorted(s.name for s in matched)]
    names = list(dict.fromkeys(names))
    if not names:
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        raise NotFound(f"no server matches {selector or 'the request'}")
    if len(names) > MAX_TARGETS or (method == "logs" and len(names) > 1):
        raise Invalid("too many targets", details={"fields": ["targets"]})
    if isinstance(start, ExecStart) and start.stdin and len(names) > 1:
        raise Invalid("stdin goes to one server only", details={"fields": ["start.stdin"]})
    targets = [
        Target(stream_id=i, server=n, start=attrs.evolve(start, stream_id=i))
        for i, n in enumerate(names, 1)
    ]
    return targets, min(parallel, MAX_PARALLEL)


async def _relay_all(
    targets: list[Target], parallel: int, send: SendFn, session: UserSession, *, keepalive: bool
) -> ProtocolError | None:
    """Run every target's relay (at most ``parallel`` at once) while reading the client.

    Returns the protocol error that ended the connection early, if the client sent one; the
    relays are then cancelled, which kills their remote processes. A ``keepalive`` client
    that sends nothing (not even a pong) for ``client_ping_timeout`` seconds ends the session.
    """
    who = principal()
    source = websocket.remote_addr or ""
    # Bulk output wants a wide agent window; many concurrent streams share one budget.
    window = grown_window(min(parallel, len(targets)))
    relays = StreamTable[Relay]()
    for t in targets:
        relays.open(
            t.stream_id,
            Relay(ctx(), who, t, send, source=source, agent_window=window, session=session),
        )
    limiter = trio.CapacityLimiter(parallel)

    async def run_one(relay: Relay) -> None:
        async with limiter:
            await relay.run()

    broken: list[ProtocolError] = []
    heard = _Heard()

    async def read_client(scope: trio.CancelScope) -> None:
        try:
            await _read_client(relays, heard)
        except ProtocolError as exc:
            broken.append(exc)
            scope.cancel()

    async with trio.open_nursery() as outer:
        outer.start_soon(read_client, outer.cancel_scope)
        if keepalive:
            outer.start_soon(_keep_alive, heard, send, session)
        async with trio.open_nursery() as inner:
            for relay in relays:
                inner.start_soon(run_one, relay)
        outer.cancel_scope.cancel()
    return broken[0] if broken else None


class _Heard:
    """When the client last sent anything (trio time)."""

    def __init__(self) -> None:
        self.at = trio.current_time()


async def _keep_alive(heard: _Heard, send: SendFn, session: UserSession) -> None:
    """Ping a quiet client every interval; end the session once it has been silent for the
    timeout (the relays' audit entries then carry ``reason: ping timeout``)."""
    interval, timeout = _ping()
    if timeout <= 0:
        return
    nonce = 0
    next_ping = 0.0
    while True:
        now = trio.current_time()
        if now >= heard.at + timeout:
            session.close(PING_TIMEOUT)
            return
        if now >= heard.at + interval and now >= next_ping:
            nonce += 1
            next_ping = now + interval
            # Never wait on a client that does not read: its silence is the answer.
            with trio.move_on_after(interval):
                await send(Ping(nonce=nonce))
        await trio.sleep_until(min(heard.at + timeout, max(heard.at + interval, next_ping)))


async def _read_client(relays: StreamTable[Relay], heard: _Heard) -> None:
    """Dispatch what the CLI sends (credit, stdin, signals) to the stream it names.

    Raises :class:`ProtocolError` for anything malformed or out of turn."""
    while True:
        data = await websocket.receive()
        heard.at = trio.current_time()
        if isinstance(data, str):
            msg = decode(data)
            if isinstance(msg, Pong):
                continue
            relay = relays.require(getattr(msg, "stream_id", None))
            if isinstance(msg, Credit):
                relay.grant(msg)
            elif isinstance(msg, Signal | Resize | StdinClose | StreamCancel):
                await relay.control(msg)
            else:
                raise ProtocolError(f"{msg.TYPE!r} is not a message a client may send here")
        else:
            frame = decode_data(data)
            await relays.require(frame.stream_id).stdin(frame)
