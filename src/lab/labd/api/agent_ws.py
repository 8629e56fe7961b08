"""``/ws/agent``: the one WebSocket of every agent (mTLS, ``server/NAME`` certificates only).

New handshakes are admitted at a bounded rate (``agent_admit_rate``); an excess handshake is
accepted and closed at once with 1013 (try again later), which the agent treats like any lost
connection (backoff with jitter). Everything after admission is :meth:`AgentHub.serve`.
"""

from __future__ import annotations

from functools import partial

from quart import Blueprint, websocket

from lab.labd.access.auth import principal, requires
from lab.labd.audit.entries import record
from lab.labd.context import ctx

bp = Blueprint("agent_ws", __name__)

TRY_AGAIN_LATER = 1013


class _QuartTransport:
    """quart's websocket object as a :class:`lab.labd.hub.session.Transport`."""

    __slots__ = ("_ws",)

    def __init__(self) -> None:
        # The real object, not the context-local proxy: the hub's tasks use it too.
        self._ws = websocket._get_current_object()  # type: ignore[attr-defined]

    async def receive(self) -> str | bytes:
        data: str | bytes = await self._ws.receive()
        return data

    async def send(self, data: str | bytes) -> None:
        await self._ws.send(data)

    async def close(self, code: int, reason: str = "") -> None:
        await self._ws.close(code, reason)


@bp.websocket("/ws/agent")
@requires("server")
async def agent_socket() -> None:
    context = ctx()
    hub = context.hub
    who = principal()
    transport = _QuartTransport()
    await websocket.accept()
    if not hub.admit():
        await transport.close(TRY_AGAIN_LATER, "too many agents connecting; try again later")
        return
    await hub.serve(
        transport,
        name=who.name,
        serial=who.serial,
        source=websocket.remote_addr or "",
        audit=partial(record, context, principal=who),
    )
