"""Who is calling, and may they: one check for every HTTP route and WebSocket.

Every view declares its policy with :func:`public` or :func:`requires`; a view without one is
refused (403) so a forgotten declaration fails closed. :func:`authenticate` runs before every
request and WebSocket: it verifies the client certificate (our CA, valid, not revoked, right
profile), loads the user's roles and asks RBAC.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from attrs import evolve, frozen
from quart import current_app, g, has_websocket_context, request, websocket
from quart.wrappers import Request, Websocket

from lab import pki
from lab.errors import LabError, PermissionDenied, Unauthenticated
from lab.labd.access import rbac
from lab.labd.access.ratelimit import Limits
from lab.labd.audit import entries as audit
from lab.labd.context import ctx
from lab.model import Role
from lab.model.safejson import loads

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

ATTR = "__lab_auth__"


@frozen(kw_only=True)
class Policy:
    public: bool = False
    kinds: frozenset[str] = frozenset()
    action: str | None = None
    # Resource template filled from the route's view args, e.g. "token/{token_id}", and for a
    # route whose target is named in its JSON body, from that body: "cluster/{body.name}".
    resource: str = "*"


_BODY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


class _BodyFields:
    """The top-level string fields of a JSON body for a resource template; anything that is
    not a plain name (missing, another type, a '*' or '/') reads as "" so that no pattern
    short of '*' allows it, and the handler's own validation answers the 400."""

    def __init__(self, data: Any) -> None:
        self._data = data if isinstance(data, dict) else {}

    def __getattr__(self, key: str) -> str:
        value = self._data.get(key)
        return value if isinstance(value, str) and _BODY_NAME.fullmatch(value) else ""


async def _resource_of(policy: Policy, req: Request | Websocket, *, read_body: bool) -> str:
    args: dict[str, Any] = dict(req.view_args or {})
    if "{body." in policy.resource:
        data = None
        if read_body and isinstance(req, Request):
            try:
                data = loads(await req.get_data(as_text=False))
            except LabError:
                data = None  # the handler's body() answers the 400 (or 413)
        args["body"] = _BodyFields(data)
    return policy.resource.format(**args)


@frozen(kw_only=True)
class Principal:
    kind: str  # "user" | "server" | "bastion" | "replica"
    name: str
    serial: str
    not_after: datetime
    roles: tuple[Role, ...] = ()

    @property
    def subject(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def role_names(self) -> list[str]:
        return [r.name for r in self.roles]


def public(fn: F) -> F:
    """Mark a view as reachable without a client certificate."""
    setattr(fn, ATTR, Policy(public=True))
    return fn


def requires(
    *kinds: str, action: str | None = None, resource: str = "*", per_target: bool = False
) -> Callable[[F], F]:
    """Require a client certificate of one of ``kinds`` and, for users, RBAC on ``action``.

    ``per_target=True`` is for routes whose resources are named only inside the request (the
    exec/logs websockets): the handler calls :func:`check` for each target itself.
    """
    if not kinds:
        raise ValueError("requires() needs at least one certificate kind")
    if per_target and action is not None:
        raise ValueError("per_target routes check each target's action themselves")
    if "user" in kinds and action is None and not per_target:
        raise ValueError("user routes must declare the action RBAC checks (or per_target)")

    def mark(fn: F) -> F:
        setattr(fn, ATTR, Policy(kinds=frozenset(kinds), action=action, resource=resource))
        return fn

    return mark


def policy_of(view: Callable[..., Any]) -> Policy | None:
    policy = getattr(view, ATTR, None)
    return policy if isinstance(policy, Policy) else None


def principal() -> Principal:
    """The authenticated caller of the current request (not for public routes)."""
    who: Principal = g.principal
    return who


def peer_der() -> bytes | None:
    scope = websocket.scope if has_websocket_context() else request.scope
    tls = scope.get("extensions", {}).get("tls") or {}
    der = tls.get("client_cert_der")
    return der if isinstance(der, bytes) and der else None


async def authenticate() -> None:
    """before_request / before_websocket hook: sets ``g.principal`` or raises.

    Order: find the route's policy, mark the request for the audit hooks, verify the client
    certificate, apply the rate limits (per certificate serial, else per source address), then
    RBAC. A refusal is raised; the error handler answers it and the audit hooks of
    :mod:`lab.labd.audit.entries` record it, for REST requests and WebSockets alike.
    """
    await _authenticate(websocket if has_websocket_context() else request)
    audit.passed(ctx(), g.get("principal"))


async def _authenticate(req: Request | Websocket) -> None:
    view = current_app.view_functions.get(req.endpoint or "")
    if view is None:
        return  # no route: let the 404/405 handlers answer
    policy = policy_of(view)
    rule = req.url_rule.rule if req.url_rule is not None else ""
    if policy is None:
        audit.begin(f"api:{req.endpoint}", rule)
        raise PermissionDenied("this route declares no permission")
    limits: Limits = current_app.extensions["lab.limits"]
    address = f"addr/{req.remote_addr or 'unknown'}"
    if policy.public:
        if rule in audit.PUBLIC_ACTIONS:
            audit.begin(audit.PUBLIC_ACTIONS[rule], "")
        if req.blueprint != "health":
            _limit(limits, address, req.blueprint)
        return
    resource = await _resource_of(policy, req, read_body=False)
    audit.begin(policy.action or f"api:{req.endpoint}", resource)
    der = peer_der()
    if der is None:
        _limit(limits, address, req.blueprint)
        raise Unauthenticated(
            "a client certificate is required", details={"reason": "no_certificate"}
        )
    c = ctx()
    try:
        ident = pki.verify_peer(der, c.ca.trusted, at=datetime.now(UTC))
    except LabError:
        _limit(limits, address, req.blueprint)
        raise
    if ident.kind != "replica":  # forwarded streams were rate limited on the first replica
        _limit(limits, f"cert/{ident.serial}", req.blueprint)
    partial = Principal(
        kind=ident.kind, name=ident.name, serial=ident.serial, not_after=ident.not_after
    )
    g.principal = partial  # known from here on, so a refusal below is audited with its name
    if await c.revocations.is_revoked(ident.serial):
        raise Unauthenticated("certificate has been revoked", details={"reason": "revoked"})
    if ident.kind not in policy.kinds:
        raise PermissionDenied(
            f"a {ident.kind} certificate cannot use this route",
            details={"reason": "wrong_profile", "allowed": sorted(policy.kinds)},
        )
    if ident.kind == "user":
        g.principal = evolve(partial, roles=await c.identities.user_roles(ident.name))
    if "{body." in policy.resource:
        # Read only once the caller is known: the target named in the body, for the audit too.
        resource = await _resource_of(policy, req, read_body=True)
        audit.set_resource(resource)
    if policy.action is not None and ident.kind == "user":
        check(g.principal, policy.action, resource)


def _limit(limits: Limits, key: str, blueprint: str | None) -> None:
    """Take a token for ``key`` from the general bucket, and from the join-token bucket on the
    join-token routes; RateLimited (429) when one is empty."""
    now = time.monotonic()
    limits.general.check(key, now)
    if blueprint == "tokens":
        limits.tokens.check(key, now)


def check(who: Principal, action: str, resource: str) -> rbac.Decision:
    """Raise PermissionDenied naming ``action`` and ``resource`` unless RBAC allows it."""
    decision = rbac.decide(who.roles, action, resource)
    if not decision.allowed:
        raise PermissionDenied(
            f"{who.subject} may not {action} on {resource}",
            details={"action": action, "resource": resource, "reason": decision.explain()},
        )
    return decision
