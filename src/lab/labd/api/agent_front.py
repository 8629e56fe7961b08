"""``/ws/agent`` served on the TLS connection itself, below hypercorn and quart.

A labd holds one agent WebSocket per server, 10,000 of them on one small box. Served through
hypercorn and quart, each session carried hypercorn's connection and app tasks, quart-trio's
message and handler tasks, three memory channels and quart's request context; a memory profile
(tracemalloc, 2,000 agents) put that stack at over half of a session's Python objects.
:class:`AgentFront` (labd's :class:`lab.runtime.front.TLSFront`) reads the first request of
each TLS connection and serves a plain agent upgrade itself (:mod:`lab.runtime.rawws`): the
session is then the hub's own tasks and the TLS stream.

It serves only what it is sure to answer as the app would, and nothing it refuses: a request
that is not a plain upgrade to ``/ws/agent``, a caller without a valid ``server/…``
certificate of our CA, a revoked one, one over its rate limit: each goes to hypercorn with the
bytes already read, and the app (``lab.labd.api.agent_ws``) answers and audits it as always.
An accepted agent passes the same access check as there (certificate, rate limit per serial,
revocation, profile) and the same admission rate (1013 beyond it).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import trio

from lab import pki
from lab.errors import LabError
from lab.labd.access.auth import Principal
from lab.labd.access.ratelimit import Limits
from lab.labd.api.agent_ws import TRY_AGAIN_LATER
from lab.labd.audit.entries import record
from lab.labd.context import LabdContext
from lab.runtime.front import PushedBackTLS, TLSConnectionFront
from lab.runtime.logs import begin_request
from lab.runtime.rawws import RawWebSocket, Upgrade, accept_response, parse_upgrade

PATH = b"/ws/agent"
RECEIVE_SIZE = 4096  # the first request of a connection: a head, a few hundred bytes

log = logging.getLogger(__name__)


class AgentFront:
    """Serves agents' ``/ws/agent`` upgrades; any other first request goes to ``then`` (the
    next front) or to hypercorn, with the bytes already read.

    ``idle_timeout`` bounds the wait for the whole first head (0: no limit), as hypercorn's
    keep-alive timeout bounds it for the requests it reads.
    """

    def __init__(
        self,
        context: LabdContext,
        limits: Limits,
        *,
        idle_timeout: float,
        then: TLSConnectionFront | None = None,
    ) -> None:
        self.context = context
        self.limits = limits
        self.idle_timeout = idle_timeout or float("inf")
        self.then = then
        self._waiting: set[trio.CancelScope] = set()  # connections before their first byte
        self._closing = False

    def close_idle(self) -> None:
        self._closing = True
        for scope in self._waiting:
            scope.cancel()
        if self.then is not None:
            self.then.close_idle()

    async def serve(
        self,
        stream: trio.SSLStream[Any],
        tls: dict[str, Any],
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
    ) -> trio.abc.Stream | None:
        """Serve an agent's WebSocket to its end (``None``), or hand the connection on. Never
        raises for a broken connection; closes the stream it served."""
        try:
            buf = await self._first_head(stream)
            if buf is not None:
                head = parse_upgrade(buf, PATH)
                who = await self._access(tls) if isinstance(head, Upgrade) else None
                if not isinstance(head, Upgrade) or who is None:
                    pushed = PushedBackTLS(stream, bytes(buf))
                    if self.then is None:
                        return pushed
                    # The next front reads on from the bytes pushed back (a PushedBackTLS
                    # stands for the TLS stream there: receive, send, close).
                    return await self.then.serve(cast(Any, pushed), tls, client, server)
                # The session needs nothing more of it; its caller's frame keeps the dict for
                # the session's life (the certificate, DER and PEM: ~4 KB of 10,000 sessions).
                tls.clear()
                await self._serve(stream, head, who, bytes(buf[head.size :]), client)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await trio.aclose_forcefully(stream)
        return None

    async def _first_head(self, stream: trio.SSLStream[Any]) -> bytearray | None:
        """The bytes read until the first head is complete or clearly not an agent's upgrade;
        None when the client left or idled too long (the connection is then closed)."""
        buf = bytearray()
        with trio.move_on_after(self.idle_timeout) as scope:
            self._waiting.add(scope)
            try:
                if self._closing:
                    return None
                while True:
                    data = await stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        return None
                    if not buf:
                        self._waiting.discard(scope)  # a request is coming: not idle
                    buf += data
                    if parse_upgrade(buf, PATH) is not None:
                        return buf
            finally:
                self._waiting.discard(scope)
        return None

    async def _access(self, tls: dict[str, Any]) -> Principal | None:
        """The agent's principal when the app's access check would let it in, else None (the
        app then refuses it, with its answer and audit entry)."""
        der = tls.get("client_cert_der")
        if not isinstance(der, bytes):
            return None
        context = self.context
        try:
            ident = pki.verify_peer(der, context.ca.trusted, at=datetime.now(UTC))
        except LabError:
            return None
        if ident.kind != "server" or await context.revocations.is_revoked(ident.serial):
            return None
        try:  # last: a refusal above costs the caller no token (the app takes it then)
            self.limits.general.check(f"cert/{ident.serial}", time.monotonic())
        except LabError:
            return None
        return Principal(
            kind=ident.kind, name=ident.name, serial=ident.serial, not_after=ident.not_after
        )

    async def _serve(
        self,
        stream: trio.SSLStream[Any],
        head: Upgrade,
        who: Principal,
        rest: bytes,
        client: tuple[str, int] | None,
    ) -> None:
        begin_request(head.request_id)  # the session's log lines carry it, as under quart
        await stream.send_all(accept_response(head.key))
        context = self.context
        with trio.CancelScope() as scope:
            ws = RawWebSocket(stream, scope, rest)
            if not context.hub.admit():
                await ws.close(TRY_AGAIN_LATER, "too many agents connecting; try again later")
                return
            await context.hub.serve(
                ws,
                name=who.name,
                serial=who.serial,
                source=client[0] if client else "",
                audit=partial(record, context, principal=who),
            )


__all__ = ["AgentFront"]
