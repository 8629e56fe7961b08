"""``/ws/exec`` and ``/ws/logs``: remote exec and log streaming for user certificates.

The first client message is a ``request`` naming the targets and carrying the ``exec-start``
(or ``logs-start``) template; labd answers with a ``response`` listing one stream per target,
then relays each target's stream (see :mod:`lab.labd.streams` and docs/protocol.md). RBAC is
checked per target here, since the resource (``server/NAME``) is only known from that message.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs
import trio
from quart import Blueprint, websocket

from lab.errors import Invalid, LabError
from lab.labd.app import ctx
from lab.labd.auth import principal, requires
from lab.labd.streams import Relay, Target
from lab.labd.user_sessions import DISABLED, REVOKED, UserSession
from lab.proto import decode, decode_data, encode
from lab.proto.errors import CloseCode, ProtocolError
from lab.proto.messages import (
    Credit,
    ExecStart,
    LogsStart,
    Message,
    Request,
    Resize,
    Response,
    RpcError,
    Signal,
    StdinClose,
    StreamCancel,
)
from lab.proto.streams import grown_window

log = logging.getLogger(__name__)

bp = Blueprint("exec_ws", __name__)


# Seconds a client has to send its first message after the handshake.
FIRST_MESSAGE_TIMEOUT = 10.0
MAX_PARALLEL = 256
DEFAULT_PARALLEL = 32
MAX_TARGETS = 10_000


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
    closes with :attr:`CloseCode.REVOKED`.
    """
    who = principal()
    with (
        trio.CancelScope() as scope,
        ctx().user_sessions.session(serial=who.serial, user=who.name, scope=scope) as session,
    ):
        # Revoked between the handshake's check and the registration: end it all the same.
        if await ctx().revocations.is_revoked(who.serial):
            session.close(REVOKED)
        await _converse(method, session)
    if session.reason is not None:
        await websocket.close(CloseCode.REVOKED, _CLOSE_REASONS.get(session.reason, session.reason))


_CLOSE_REASONS = {REVOKED: "certificate revoked", DISABLED: "user disabled"}


async def _converse(method: str, session: UserSession) -> None:
    send_lock = trio.Lock()

    async def send(item: Message | bytes) -> None:
        data = item if isinstance(item, bytes) else encode(item)
        async with send_lock:
            await websocket.send(data)

    try:
        request = await _first_message(method)
        try:
            targets, parallel = await _targets(method, request)
        except LabError as exc:
            error = RpcError(code=exc.code, message=exc.message, details=exc.details)
            await send(Response(request_id=request.request_id, error=error))
            code = exc.close_code if isinstance(exc, ProtocolError) else CloseCode.NORMAL
            raise _Closing(code, exc.code) from None
        streams = [{"stream_id": t.stream_id, "server": t.server} for t in targets]
        await send(Response(request_id=request.request_id, result={"streams": streams}))
        broken = await _relay_all(targets, parallel, send, session)
        if broken is not None:
            raise broken
        await websocket.close(CloseCode.NORMAL, "done")
    except ProtocolError as exc:
        await websocket.close(exc.close_code, exc.message[:120])
    except _Closing as closing:
        await websocket.close(closing.code, closing.reason[:120])


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


async def _targets(method: str, request: Request) -> tuple[list[Target], int]:
    """Resolve the request's servers (names and/or a label selector) into streams 1..N."""
    params = request.params
    names = params.get("targets", [])
    labels = params.get("labels") or {}
    parallel = params.get("parallel", DEFAULT_PARALLEL)
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise Invalid("targets must be a list of server names", details={"fields": ["targets"]})
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise Invalid("labels must map strings to strings", details={"fields": ["labels"]})
    if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
        raise Invalid("parallel must be a positive integer", details={"fields": ["parallel"]})
    start_type = "exec-start" if method == "exec" else "logs-start"
    template = params.get("start")
    if not isinstance(template, dict):
        raise Invalid(f"start must be a {start_type} object", details={"fields": ["start"]})
    start = decode(json.dumps({**template, "type": start_type, "v": 1, "stream_id": 0}))
    assert isinstance(start, ExecStart | LogsStart)
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
        from lab.errors import NotFound

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
    targets: list[Target], parallel: int, send: Any, session: UserSession
) -> ProtocolError | None:
    """Run every target's relay (at most ``parallel`` at once) while reading the client.

    Returns the protocol error that ended the connection early, if the client sent one; the
    relays are then cancelled, which kills their remote processes.
    """
    who = principal()
    source = websocket.remote_addr or ""
    # Bulk output wants a wide agent window; many concurrent streams share one budget.
    window = grown_window(min(parallel, len(targets)))
    relays = {
        t.stream_id: Relay(ctx(), who, t, send, source=source, agent_window=window, session=session)
        for t in targets
    }
    limiter = trio.CapacityLimiter(parallel)

    async def run_one(relay: Relay) -> None:
        async with limiter:
            await relay.run()

    broken: list[ProtocolError] = []

    async def read_client(scope: trio.CancelScope) -> None:
        try:
            await _read_client(relays)
        except ProtocolError as exc:
            broken.append(exc)
            scope.cancel()

    async with trio.open_nursery() as outer:
        outer.start_soon(read_client, outer.cancel_scope)
        async with trio.open_nursery() as inner:
            for relay in relays.values():
                inner.start_soon(run_one, relay)
        outer.cancel_scope.cancel()
    return broken[0] if broken else None


async def _read_client(relays: dict[int, Relay]) -> None:
    """Dispatch what the CLI sends (credit, stdin, signals) to the stream it names.

    Raises :class:`ProtocolError` for anything malformed or out of turn."""
    while True:
        data = await websocket.receive()
        if isinstance(data, str):
            msg = decode(data)
            relay = _relay_for(relays, getattr(msg, "stream_id", None))
            if isinstance(msg, Credit):
                relay.grant(msg)
            elif isinstance(msg, Signal | Resize | StdinClose | StreamCancel):
                await relay.control(msg)
            else:
                raise ProtocolError(f"{msg.TYPE!r} is not a message a client may send here")
        else:
            frame = decode_data(data)
            await _relay_for(relays, frame.stream_id).stdin(frame)


def _relay_for(relays: dict[int, Relay], stream_id: int | None) -> Relay:
    relay = relays.get(stream_id) if stream_id is not None else None
    if relay is None:
        raise ProtocolError(f"no stream {stream_id}", close_code=CloseCode.UNKNOWN_STREAM)
    return relay
