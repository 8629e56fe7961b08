"""``/ws/replica/stream``: the replica-internal forwarding route (``replica/<id>`` certs only).

Another labd replica, whose user asked for an exec or log stream on an agent this replica holds,
opens this WebSocket and sends a ``forward`` request naming the server and carrying the start
message. We open the stream on our *local* hub only (never forward again, so no loops), answer
with a ``response`` and relay the agent protocol's frames both ways (see
:mod:`lab.labd.relay.forwarding` for the flow control). The caller already checked RBAC and writes
the audit entries; a replica certificate can use no other route.

This module also registers the app-wide hook that, after user and role changes, empties this
replica's role cache and bumps the cluster change counter, so the other replicas reload (and
empty theirs) within a poll.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import trio
from quart import Blueprint, Response, request, websocket

from lab.errors import LabError
from lab.labd.access.auth import requires
from lab.labd.context import ctx
from lab.labd.hub.registry import HubStream
from lab.labd.relay.forwarding import parse_forward_request
from lab.proto import DataFrame, ProtocolError, decode, decode_data, encode
from lab.proto.errors import CloseCode
from lab.proto.frames import Channel, encode_data
from lab.proto.messages import Credit, Message, Resize, RpcError, Signal, StdinClose
from lab.proto.messages import Response as RpcResponse

log = logging.getLogger(__name__)

bp = Blueprint("replica_ws", __name__)

FIRST_MESSAGE_TIMEOUT = 10.0

Send = Callable[[Message | bytes], Awaitable[None]]
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
    send_lock = trio.Lock()

    async def send(item: Message | bytes) -> None:
        data = item if isinstance(item, bytes) else encode(item)
        async with send_lock:
            await websocket.send(data)

    await websocket.accept()
    try:
        with trio.fail_after(FIRST_MESSAGE_TIMEOUT):
            first = await websocket.receive()
        request_msg = decode(first)
        server, start = parse_forward_request(request_msg)
        request_id = getattr(request_msg, "request_id", "")
    except trio.TooSlowError:
        await websocket.close(int(CloseCode.POLICY_VIOLATION), "no request in time")
        return
    except ProtocolError as exc:
        await websocket.close(int(exc.close_code), exc.message[:120])
        return
    try:
        async with ctx().hub.agent_stream(server, start) as stream:
            await send(RpcResponse(request_id=request_id, result={"replica": ctx().hub.replica}))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_uplink, stream, send)
                await _downlink(stream, send)
                nursery.cancel_scope.cancel()
    except ProtocolError as exc:
        await websocket.close(int(exc.close_code), exc.message[:120])
        return
    except LabError as exc:
        error = RpcError(code=exc.code, message=exc.message, details=exc.details)
        with contextlib.suppress(Exception):
            await send(RpcResponse(request_id=request_id, error=error))
    await websocket.close(int(CloseCode.NORMAL), "done")


async def _downlink(stream: HubStream, send: Send) -> None:
    """Relay the agent's items; the last one (exit, logs-end, error) ends the stream."""
    async for item in stream:
        if isinstance(item, DataFrame):
            await send(encode_data(item.stream_id, item.channel, item.seq, item.payload))
        else:
            await send(item)


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
