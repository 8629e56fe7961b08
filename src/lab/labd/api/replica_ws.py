"""``/ws/replica/stream``: the replica-internal forwarding route (``replica/<id>`` certs only).

Another labd replica, whose user asked for an exec or log stream on an agent this replica holds,
opens this WebSocket and sends a ``forward`` request naming the server and carrying the start
message. We open the stream on our *local* hub only (never forward again, so no loops), answer
with a ``response`` and relay the agent protocol's frames both ways (see
:mod:`lab.labd.relay.forwarding` for the flow control). The caller already checked RBAC and writes
the audit entries; a replica certificate can use no other route. After a stream's last item
(its exit, logs-end or error) the link waits for the next ``forward`` request (the answer says
``reuse``): the forwarder keeps links between streams (:mod:`lab.labd.relay.links`), and closes
one whose caller left early, which ends that stream here.

This module also registers the app-wide hook that, after user and role changes, empties this
replica's role cache and bumps the cluster change counter, so the other replicas reload (and
empty theirs) within a poll.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol

import trio
from quart import Blueprint, Response, request, websocket

from lab.errors import LabError
from lab.labd.access.auth import principal, requires
from lab.labd.context import ctx
from lab.labd.hub.registry import HubStream
from lab.labd.relay.forwarding import parse_forward_request
from lab.labd.relay.links import HOLDER_IDLE, IDLE_REASON
from lab.proto import DataFrame, ProtocolError, decode, decode_data, encode
from lab.proto.errors import CloseCode
from lab.proto.frames import Channel, encode_data
from lab.proto.messages import (
    Credit,
    Error,
    ExecExit,
    ExecStart,
    LogsEnd,
    LogsStart,
    Message,
    Resize,
    RpcError,
    Signal,
    StdinClose,
)
from lab.proto.messages import Response as RpcResponse

log = logging.getLogger(__name__)

bp = Blueprint("replica_ws", __name__)

FIRST_MESSAGE_TIMEOUT = 10.0


class Send(Protocol):
    async def __call__(self, item: Message | bytes, *, last: bool = False) -> None: ...


# Successful writes on these blueprints change who may do what (users: disable, enable,
# grants; roles: rules).
_IDENTITY_BLUEPRINTS = frozenset({"users", "roles"})


@bp.after_app_request
async def bump_on_identity_change(response: Response) -> Response:
    """After a user or role change, before it is answered: forget the roles this replica keeps
    (lab.labd.identity.rolecache; on any answer, as a failed change may have written part) and,
    when it succeeded, tell the other replicas (change counter)."""
    if request.blueprint in _IDENTITY_BLUEPRINTS and request.method not in (
        "GET",
        "HEAD",
        "OPTIONS",
    ):
        c = ctx()
        c.identities.role_cache.forget()
        if response.status_code < 400 and c.cluster is not None:
            await c.cluster.note_change()
    return response


@bp.websocket("/ws/replica/stream")
@requires("replica")
async def replica_stream() -> None:
    """Serve forward requests one after the other until the forwarder closes the link (it
    keeps a link whose stream ended cleanly for its next stream to us, see
    lab.labd.relay.links), or it stays idle for HOLDER_IDLE seconds."""
    await websocket.accept()
    who = principal()
    serial = who.serial
    log.info("forwarding link from %s opened", who.subject)
    first = True
    while True:
        try:
            with trio.fail_after(FIRST_MESSAGE_TIMEOUT if first else HOLDER_IDLE):
                request_msg = await _wait_request(leftovers=not first)
            if request_msg is None:
                await websocket.close(int(CloseCode.GOING_AWAY), "labd is shutting down")
                return
            server, start = parse_forward_request(request_msg)
            request_id = getattr(request_msg, "request_id", "")
        except trio.TooSlowError:
            if first:
                await websocket.close(int(CloseCode.POLICY_VIOLATION), "no request in time")
            else:
                await websocket.close(int(CloseCode.NORMAL), IDLE_REASON)
            return
        except ProtocolError as exc:
            await websocket.close(int(exc.close_code), exc.message[:120])
            return
        # The link outlives the handshake that checked the certificate: check it again.
        if not first and await ctx().revocations.is_revoked(serial):
            await websocket.close(int(CloseCode.REVOKED), "certificate revoked")
            return
        if not await _serve_one(server, start, request_id):
            return
        first = False


async def _wait_request(*, leftovers: bool) -> Message | None:
    """The next forward request (``leftovers``: after a stream, see :func:`_next_request`);
    None when labd begins to shut down first."""
    stopping = ctx().hub.stopping
    found: list[Message] = []
    broken: list[ProtocolError] = []
    async with trio.open_nursery() as nursery:

        async def stop_on_shutdown() -> None:
            await stopping.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(stop_on_shutdown)
        try:
            found.append(await _next_request(leftovers=leftovers))
        except ProtocolError as exc:  # raised as itself below, not in the nursery's group
            broken.append(exc)
        nursery.cancel_scope.cancel()
    if broken:
        raise broken[0]
    return found[0] if found else None


async def _next_request(*, leftovers: bool) -> Message:
    """The next message, a forward request unless the forwarder breaks the protocol
    (parse_forward_request says so). With ``leftovers`` (a stream ran on the link before),
    what the forwarder sent for that stream after its end (credit, stdin it had queued) is
    dropped."""
    while True:
        data = await websocket.receive()
        if not leftovers:
            return decode(data)
        if isinstance(data, bytes):
            continue
        msg = decode(data)
        if not isinstance(msg, Credit | Signal | Resize | StdinClose):
            return msg


async def _serve_one(server: str, start: ExecStart | LogsStart, request_id: str) -> bool:
    """Run one forwarded stream; False when the link was closed (a protocol error)."""
    send_lock = trio.Lock()
    ended = False  # the stream's last item went out: nothing more for it on the link

    async def send(item: Message | bytes, *, last: bool = False) -> None:
        nonlocal ended
        data = item if isinstance(item, bytes) else encode(item)
        async with send_lock:
            if ended:
                return  # a stdin acknowledgement that lost the race to the last item
            await websocket.send(data)
            ended = last

    try:
        async with ctx().hub.agent_stream(server, start) as stream:
            result = {"replica": ctx().hub.replica, "reuse": True}
            await send(RpcResponse(request_id=request_id, result=result))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_uplink, stream, send)
                await _downlink(stream, send)
                nursery.cancel_scope.cancel()
    except ProtocolError as exc:
        await websocket.close(int(exc.close_code), exc.message[:120])
        return False
    except LabError as exc:
        error = RpcError(code=exc.code, message=exc.message, details=exc.details)
        with contextlib.suppress(Exception):
            await send(RpcResponse(request_id=request_id, error=error))
    return True


async def _downlink(stream: HubStream, send: Send) -> None:
    """Relay the agent's items; the last one (exit, logs-end, error) ends the stream."""
    async for item in stream:
        if isinstance(item, DataFrame):
            await send(encode_data(item.stream_id, item.channel, item.seq, item.payload))
        else:
            await send(item, last=isinstance(item, ExecExit | LogsEnd | Error))


async def _uplink(stream: HubStream, send: Send) -> None:
    """Relay credit, signals and stdin from the forwarding replica into the hub stream.

    Each stdin chunk the hub stream accepted (it waits for the agent's stdin credit) is
    acknowledged with a ``Credit`` of its size: the forwarder's stdin window. A stream that
    cannot take more (the agent left, a malformed frame) stops the uplink; the downlink reports
    how the stream ended.
    """
    try:
        await _pump_up(stream, send)
    except LabError as exc:
        log.warning("forwarded stream of %s: %s", stream.server_name, exc.message)


async def _pump_up(stream: HubStream, send: Send) -> None:
    while True:
        data = await websocket.receive()
        if isinstance(data, str):
            msg = decode(data)
            if not isinstance(msg, Credit | Signal | Resize | StdinClose):
                raise ProtocolError(f"{msg.TYPE!r} is not a message a forwarder may send")
            await stream.send(msg)
            continue
        frame = decode_data(data)
        if frame.channel is not Channel.STDIN:
            raise ProtocolError(f"channel {frame.channel.name} does not flow to an agent")
        await stream.send(frame.payload)
        await send(Credit(stream_id=stream.stream_id, bytes=len(frame.payload)))
