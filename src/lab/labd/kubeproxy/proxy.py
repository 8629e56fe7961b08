"""``https://LABD/k8s/CLUSTER/…``: the audited Kubernetes API proxy (an ASGI app).

It is mounted in front of labd's quart app (:func:`mount`) so that bodies stream both ways
without quart's buffering and timeouts, and so upgrades arrive as raw tunnels
(:mod:`lab.runtime.rawupgrade`). For each request, in this order:

1. the client certificate: a user certificate of our CA, not revoked (agent, bastion and
   replica certificates are refused; no certificate is 401);
2. the path is resolved and classified (:mod:`.classify`); what is judged is what is sent;
3. RBAC: ``kube:VERB`` on ``cluster/C/namespace/NS/RESOURCE/OBJECT`` (deny overrides allow),
   API descriptions as ``kube:discover`` on ``cluster/C/discovery``;
4. the request goes to the cluster's API server with the cluster's credentials and labd's
   impersonation headers only (:mod:`.headers`);
5. one audit entry when the answer's head arrives (before the client sees it: if the entry
   cannot be written the client gets 503), or, for exec/attach/port-forward, one when the
   tunnel opens and one when it closes (bytes each way, exit status), linked by a session id.
   API descriptions are counted in ``labd_kube_discovery_requests_total``, not audited.
   Refusals are audited too (those without a certificate at most once an hour per address).

Refusals answer in the API's own ``Status`` format, so kubectl prints them as it prints the
API server's.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio
from attrs import evolve

from lab import pki
from lab.errors import LabError, PermissionDenied, Unauthenticated, Unavailable
from lab.labd.access import rbac
from lab.labd.access.auth import Principal
from lab.labd.audit import entries as audit
from lab.labd.audit.entries import RefusalLog
from lab.labd.kubeproxy import upstream as kube_upstream
from lab.labd.kubeproxy.calls import (
    ASGIApp,
    Call,
    Receive,
    Refused,
    Scope,
    Send,
    groups_of,
    raw_body,
    read_client,
    status_body,
    then_cancel,
)
from lab.labd.kubeproxy.channels import CHANNEL_PROTOCOLS, StatusScanner, exit_status
from lab.labd.kubeproxy.classify import KubeRequest, classify
from lab.labd.kubeproxy.headers import (
    client_response_headers,
    upgrade_of,
    upstream_request_headers,
)
from lab.labd.kubeproxy.pool import Answer
from lab.labd.kubeproxy.upstream import Upstream, Upstreams, open_raw
from lab.runtime.logs import REQUEST_ID_HEADER, begin_request
from lab.runtime.rawupgrade import EXTENSION as RAW_UPGRADE

if TYPE_CHECKING:
    from lab.labd.context import LabdContext
    from lab.model import Role

log = logging.getLogger(__name__)

PREFIX = "/k8s/"

_BODY_CHANNEL = 4  # chunks of request body in flight toward the API server
_DECISIONS = 4096  # RBAC decisions kept (user, action, resource), all forgotten when full


class KubeProxy:
    """The ``/k8s`` ASGI app; see the module docstring."""

    def __init__(self, context: LabdContext) -> None:
        self.context = context
        # Read at each cache miss: the registry is the context's (set when labd starts).
        self.upstreams = Upstreams(lambda: context.clusters)
        self.refusals = RefusalLog()
        self.peers = pki.PeerVerifier()
        self._decisions: dict[tuple[str, str, str], tuple[tuple[Role, ...], rbac.Decision]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            # A WebSocket scope here means the upgrade was not tunnelled (it had a body):
            # refuse it rather than answer it with a different protocol.
            await send({"type": "websocket.close", "code": 1008})
            return
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        client_rid = next(
            (
                v.decode("latin-1")
                for n, v in headers
                if n.lower() == REQUEST_ID_HEADER.lower().encode()
            ),
            None,
        )
        client = scope.get("client")
        call = Call(
            started=time.perf_counter(),
            method=str(scope["method"]).upper(),
            source=str(client[0]) if client else "",
            request_id=begin_request(client_rid),
        )
        try:
            call.principal = who = await self._authenticate(scope)
            call.req = req = classify(
                scope["method"], scope.get("raw_path") or b"/", scope.get("query_string", b"")
            )
            call.groups = groups_of(who.roles)
            self._authorize(who, req)
            up = await self.upstreams.get(req.cluster)
        except LabError as exc:
            await self._refuse(call, exc, send)
            return
        if req.discovery:
            self.context.metrics.kube_discovery_requests.inc()
        target_headers = upstream_request_headers(
            headers,
            host=up.endpoint.host_header,
            user=who.name,
            groups=call.groups,
            token=up.conn.token,
            request_id=call.request_id,
        )
        raw = RAW_UPGRADE in (scope.get("extensions") or {}) and upgrade_of(headers) is not None
        try:
            if raw:
                await self._tunnel(call, req, who, up, target_headers, receive, send)
            else:
                await self._forward(call, req, who, up, target_headers, headers, receive, send)
        except LabError as exc:
            if call.answered:
                # The head is out (a watch whose API server went away): end the body there.
                log.warning("kube %s %s ended early: %s", req.verb, req.rbac_resource, exc.message)
                return
            await self._refuse(call, exc, send)

    # -- who, what, may they -------------------------------------------------------------

    async def _authenticate(self, scope: Scope) -> Principal:
        tls = (scope.get("extensions") or {}).get("tls") or {}
        der = tls.get("client_cert_der")
        if not isinstance(der, bytes) or not der:
            raise Unauthenticated(
                "a client certificate is required", details={"reason": "no_certificate"}
            )
        c = self.context
        ident = self.peers.verify(der, c.ca.trusted, at=datetime.now(UTC))
        who = Principal(
            kind=ident.kind, name=ident.name, serial=ident.serial, not_after=ident.not_after
        )
        if await c.revocations.is_revoked(ident.serial):
            raise Refused(
                who, Unauthenticated("certificate has been revoked", details={"reason": "revoked"})
            )
        if ident.kind != "user":
            raise Refused(
                who,
                PermissionDenied(
                    f"a {ident.kind} certificate cannot use the Kubernetes proxy",
                    details={"reason": "wrong_profile", "allowed": ["user"]},
                ),
            )
        try:
            roles = await c.identities.role_cache.roles(ident.name)
        except LabError as exc:
            raise Refused(who, exc) from None
        return evolve(who, roles=roles)

    def _authorize(self, who: Principal, req: KubeRequest) -> None:
        action = "kube:discover" if req.discovery else req.action
        resource = req.rbac_resource
        # A decision holds as long as the role cache hands out the same roles (the very same
        # tuple: any change, expiry or emptying of the cache gives a new one).
        key = (who.name, action, resource)
        kept = self._decisions.get(key)
        if kept is not None and kept[0] is who.roles:
            decision = kept[1]
        else:
            decision = rbac.decide(who.roles, action, resource)
            if len(self._decisions) >= _DECISIONS:
                self._decisions.clear()
            self._decisions[key] = (who.roles, decision)
        if not decision.allowed:
            raise PermissionDenied(
                f'user "{who.name}" may not {action} on {resource} ({decision.explain()})',
                details={"action": action, "resource": resource, "reason": decision.explain()},
            )

    async def _refuse(self, call: Call, exc: LabError, send: Send) -> None:
        if isinstance(exc, Refused):
            call.principal, exc = exc.principal, exc.error
        status = exc.status
        result = audit.result_of(status)
        verb = call.req.verb if call.req is not None else "unknown"
        self.context.metrics.kube_requests.labels(verb=verb, result=result).inc()
        message = exc.message
        if status >= 500 and not isinstance(exc, Unavailable):
            message = "internal error"
        body = status_body(status, message, call.req)
        if self._audit_refusal(call, exc):
            try:
                await self._record(call, status, result=result, error=exc.code, message=message)
            except Exception:
                log.exception("audit write failed for a refused /k8s request")
                body = status_body(503, "the audit log could not be written", call.req)
                status = 503
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (REQUEST_ID_HEADER.lower().encode(), call.request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _audit_refusal(self, call: Call, exc: LabError) -> bool:
        """Refusals are audited; those naming nobody (no or a bad certificate) and refused
        API descriptions at most once an hour per source and reason (a storm of either would
        otherwise fill the log)."""
        reason = str(exc.details.get("reason") or exc.code)
        if reason == "audit_unavailable":
            return False  # the log cannot be written: trying again would only wait again
        if call.principal is None:
            return self.refusals.should_audit(f"addr/{call.source}", reason, time.monotonic())
        if call.req is not None and call.req.discovery:
            key = f"{call.principal.subject}/{call.req.cluster}"
            return self.refusals.should_audit(key, reason, time.monotonic())
        return True

    async def _record(
        self, call: Call, status: int, *, result: str | None = None, **more: Any
    ) -> None:
        req = call.req
        if req is not None and req.discovery and status < 400:
            return
        action = req.action if req is not None else "kube:unknown"
        if req is not None and req.discovery:
            action = "kube:discover"
        await audit.record(
            self.context,
            action=action,
            resource=req.rbac_resource if req is not None else "",
            result=result or audit.result_of(status),
            principal=call.principal,
            source=call.source,
            duration_ms=call.duration_ms(),
            details=call.details(status, **more),
        )

    # -- ordinary requests ---------------------------------------------------------------

    async def _forward(
        self,
        call: Call,
        req: KubeRequest,
        who: Principal,
        up: Upstream,
        target_headers: list[tuple[bytes, bytes]],
        client_headers: list[tuple[bytes, bytes]],
        receive: Receive,
        send: Send,
    ) -> None:
        chunked = any(n.lower() == b"transfer-encoding" for n, _ in client_headers)
        has_body = chunked or any(
            n.lower() == b"content-length" and v.strip() != b"0" for n, v in client_headers
        )
        if chunked:
            # Framed by its chunks (which the server has decoded): a Content-Length beside
            # them says nothing, and is not passed on; the pool chunks the body again.
            target_headers = [(n, v) for n, v in target_headers if n != b"content-length"]
        target = up.endpoint.base_path + req.upstream_target
        failure: LabError | None = None
        body_send: trio.MemorySendChannel[bytes] | None = None
        body: AsyncIterator[bytes] | None = None
        if has_body:
            body_send, body_receive = trio.open_memory_channel[bytes](_BODY_CHANNEL)
            body = _pieces(body_receive)

        with self.context.user_sessions.session(
            serial=who.serial, user=who.name, scope=trio.CancelScope()
        ) as session:
            # A watch can run for hours: revoking the certificate ends it like an exec.
            async with trio.open_nursery() as nursery:
                session.scope = nursery.cancel_scope
                nursery.start_soon(read_client, receive, body_send, nursery.cancel_scope)
                answer: Answer | None = None
                try:
                    try:
                        with trio.fail_after(kube_upstream.HEAD_TIMEOUT):
                            answer = await up.pool.send(call.method, target, target_headers, body)
                    except trio.TooSlowError:
                        raise kube_upstream.no_answer(req.cluster) from None
                    status = answer.status
                    await self._account(call, req, status)
                    call.answered = True
                    await send(
                        {
                            "type": "http.response.start",
                            "status": status,
                            "headers": client_response_headers(answer.headers, upgraded=False),
                        }
                    )
                    while chunk := await answer.read():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except LabError as exc:
                    # Raised out of the nursery it would come wrapped in an exception group:
                    # keep it and raise it once the nursery is closed.
                    failure = exc
                finally:
                    nursery.cancel_scope.cancel()
                    if answer is not None:
                        # Also when the client went away (a watch ends that way): the
                        # connection goes back to the pool only after a whole answer.
                        await answer.aclose()
        if failure is not None:
            raise failure

    async def _account(self, call: Call, req: KubeRequest, status: int) -> None:
        """Count and audit an answer before its head reaches the client (fail closed)."""
        self.context.metrics.kube_requests.labels(
            verb=req.verb, result=audit.result_of(status)
        ).inc()
        try:
            await self._record(call, status)
        except Exception as exc:
            log.exception("audit write failed: refusing %s %s", req.verb, req.rbac_resource)
            raise Unavailable(
                "the audit log could not be written, so the answer is withheld",
                details={"reason": "audit_unavailable"},
            ) from exc

    # -- exec, attach, port-forward ------------------------------------------------------

    async def _tunnel(
        self,
        call: Call,
        req: KubeRequest,
        who: Principal,
        up: Upstream,
        target_headers: list[tuple[bytes, bytes]],
        receive: Receive,
        send: Send,
    ) -> None:
        answer = await open_raw(up, call.method, req.upstream_target, target_headers)
        try:
            if answer.status != 101:
                await self._account(call, req, answer.status)
                call.answered = True
                await send(
                    {
                        "type": "http.response.start",
                        "status": answer.status,
                        "headers": client_response_headers(answer.headers, upgraded=False),
                    }
                )
                async for chunk in raw_body(answer.parser, answer.stream):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await self._run_session(
                call, req, who, answer.headers, answer.leftover, answer.stream, receive, send
            )
        finally:
            await trio.aclose_forcefully(answer.stream)

    async def _run_session(
        self,
        call: Call,
        req: KubeRequest,
        who: Principal,
        headers: list[tuple[bytes, bytes]],
        leftover: bytes,
        upstream: trio.abc.Stream,
        receive: Receive,
        send: Send,
    ) -> None:
        session_id = secrets.token_hex(8)
        protocol = next(
            (v.strip() for n, v in headers if n.lower() == b"sec-websocket-protocol"), b""
        )
        upgrade = next((v.strip() for n, v in headers if n.lower() == b"upgrade"), b"")
        scanner = StatusScanner() if protocol in CHANNEL_PROTOCOLS else None
        self.context.metrics.kube_requests.labels(verb=req.verb, result="success").inc()
        common = {
            "session_id": session_id,
            "protocol": (protocol or upgrade).decode("latin-1"),
        }
        try:
            await self._record(call, 101, phase="start", **common)
        except Exception as exc:
            log.exception("audit write failed: refusing %s on %s", req.verb, req.rbac_resource)
            raise Unavailable(
                "the audit log could not be written, so the session is refused",
                details={"reason": "audit_unavailable"},
            ) from exc
        counts = {"up": 0, "down": 0}
        ended_by = "client"
        call.answered = True
        await send(
            {
                "type": "http.response.start",
                "status": 101,
                "headers": client_response_headers(headers, upgraded=True),
            }
        )

        async def down() -> None:
            nonlocal ended_by
            if leftover:
                counts["down"] += len(leftover)
                if scanner is not None:
                    scanner.feed(leftover)
                await send({"type": "http.response.body", "body": leftover, "more_body": True})
            while True:
                try:
                    data = await upstream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    ended_by = "upstream"
                    return
                counts["down"] += len(data)
                if scanner is not None:
                    scanner.feed(bytes(data))
                await send({"type": "http.response.body", "body": bytes(data), "more_body": True})

        async def up() -> None:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return
                chunk = bytes(message.get("body", b""))
                counts["up"] += len(chunk)
                try:
                    await upstream.send_all(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

        self.context.metrics.kube_sessions_active.inc()
        try:
            with self.context.user_sessions.session(
                serial=who.serial, user=who.name, scope=trio.CancelScope()
            ) as session:
                async with trio.open_nursery() as nursery:
                    session.scope = nursery.cancel_scope
                    # Either side ending ends the other.
                    nursery.start_soon(then_cancel, down, nursery.cancel_scope)
                    nursery.start_soon(then_cancel, up, nursery.cancel_scope)
                if session.reason is not None:
                    ended_by = session.reason
                elif scanner is not None and scanner.status is not None:
                    # The API server sent the exit status, which ends a channel session; the
                    # client hanging up on reading it may be seen before the server's close.
                    ended_by = "upstream"
        finally:
            self.context.metrics.kube_sessions_active.dec()
            code, message = exit_status(scanner.status if scanner is not None else None)
            with trio.CancelScope(shield=True):
                try:
                    await self._record(
                        call,
                        101,
                        phase="end",
                        bytes_up=counts["up"],
                        bytes_down=counts["down"],
                        exit_status=code,
                        exit_message=message,
                        ended_by=ended_by,
                        **common,
                    )
                except Exception:
                    log.exception("audit write failed for the end of kube session %s", session_id)
                with trio.move_on_after(1):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _pieces(channel: trio.MemoryReceiveChannel[bytes]) -> AsyncIterator[bytes]:
    """A request body's pieces as the client sends them."""
    async with channel:
        async for piece in channel:
            yield piece


def mount(app: ASGIApp, proxy: KubeProxy) -> ASGIApp:
    """``app`` with ``/k8s/…`` served by ``proxy``; the proxy's pooled clients close when the
    app's lifespan ends."""

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and str(scope.get("path", "")).startswith(PREFIX):
            await proxy(scope, receive, send)
            return
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def send_closing(message: MutableMapping[str, Any]) -> None:
            if message.get("type") == "lifespan.shutdown.complete":
                await proxy.upstreams.aclose()
            await send(message)

        await app(scope, receive, send_closing)

    return dispatch
