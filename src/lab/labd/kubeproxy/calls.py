"""What one /k8s request carries through the proxy, and the pieces of its streams: pure
helpers and small trio pumps (:mod:`lab.labd.kubeproxy.proxy` is the app that uses them)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import h11
import trio
from attrs import define, field

from lab.errors import LabError
from lab.labd.kubeproxy.classify import KubeRequest
from lab.labd.kubeproxy.headers import impersonated_user

if TYPE_CHECKING:
    from lab.labd.access.auth import Principal
    from lab.model import Role

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    429: "TooManyRequests",
    503: "ServiceUnavailable",
}


def groups_of(roles: tuple[Role, ...]) -> list[str]:
    """The Kubernetes groups a user's roles map to, each once, in role order."""
    seen: dict[str, None] = {}
    for role in roles:
        for group in getattr(role, "kubernetes_groups", ()):
            seen.setdefault(group, None)
    return list(seen)


def status_body(code: int, message: str, req: KubeRequest | None = None) -> bytes:
    """A ``v1 Status`` (what kubectl prints as ``Error from server (Reason): message``)."""
    doc: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _REASONS.get(code, "InternalError"),
        "code": code,
    }
    if req is not None and req.resource:
        details: dict[str, Any] = {"kind": req.resource}
        if req.name:
            details["name"] = req.name
        if req.group:
            details["group"] = req.group
        doc["details"] = details
    return json.dumps(doc).encode()


@define
class Call:
    """What one request has revealed so far: for its audit entry and metrics."""

    started: float
    method: str
    source: str
    request_id: str
    principal: Principal | None = None
    req: KubeRequest | None = None
    groups: list[str] = field(factory=list)
    answered: bool = False

    def duration_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def details(self, status: int, **more: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"status": status, "request_id": self.request_id}
        req = self.req
        if req is not None:
            out |= {
                "cluster": req.cluster,
                "verb": req.verb,
                "api_group": req.group,
                "resource": req.resource,
                "namespace": req.namespace,
                "name": req.name,
            }
            if req.subresource:
                out["subresource"] = req.subresource
        if self.principal is not None:
            out["impersonated_user"] = impersonated_user(self.principal.name)
            out["impersonated_groups"] = list(self.groups)
        return out | more


class Refused(LabError):
    """A refusal after the certificate named someone: audited under that name."""

    def __init__(self, principal: Principal, error: LabError) -> None:
        super().__init__(error.message, details=error.details)
        self.principal = principal
        self.error = error
        self.status = error.status
        self.code = error.code


async def then_cancel(fn: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
    try:
        await fn()
    finally:
        scope.cancel()


async def read_client(
    receive: Receive, body: trio.MemorySendChannel[bytes] | None, scope: trio.CancelScope
) -> None:
    """Pass the request body on (when there is one), then wait for the client to go away:
    its going away cancels ``scope`` (the request toward the API server)."""
    if body is not None:
        async with body:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    scope.cancel()
                    return
                chunk = bytes(message.get("body", b""))
                if chunk:
                    await body.send(chunk)
                if not message.get("more_body", False):
                    break
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def raw_body(parser: h11.Connection, stream: trio.abc.Stream) -> AsyncIterator[bytes]:
    """The body of a non-101 answer to an upgrade request, chunk by chunk."""
    while True:
        event = parser.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            parser.receive_data(bytes(data))
            continue
        if isinstance(event, h11.Data):
            yield bytes(event.data)
            continue
        return
