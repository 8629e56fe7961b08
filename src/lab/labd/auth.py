"""Who is calling, and may they: one check for every HTTP route and WebSocket.

Every view declares its policy with :func:`public` or :func:`requires`; a view without one is
refused (403) so a forgotten declaration fails closed. :func:`authenticate` runs before every
request and WebSocket: it verifies the client certificate (our CA, valid, not revoked, right
profile), loads the user's roles and asks RBAC.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from attrs import frozen
from quart import current_app, g, has_websocket_context, request, websocket

from lab import pki
from lab.errors import PermissionDenied, Unauthenticated
from lab.labd import rbac
from lab.model import Role

F = TypeVar("F", bound=Callable[..., Any])

ATTR = "__lab_auth__"


@frozen(kw_only=True)
class Policy:
    public: bool = False
    kinds: frozenset[str] = frozenset()
    action: str | None = None
    # Resource template filled from the route's view args, e.g. "token/{token_id}".
    resource: str = "*"


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


def requires(*kinds: str, action: str | None = None, resource: str = "*") -> Callable[[F], F]:
    """Require a client certificate of one of ``kinds`` and, for users, RBAC on ``action``."""
    if not kinds:
        raise ValueError("requires() needs at least one certificate kind")
    if "user" in kinds and action is None:
        raise ValueError("user routes must declare the action RBAC checks")

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
    """before_request / before_websocket hook: sets ``g.principal`` or raises."""
    from lab.labd.app import ctx

    req = websocket if has_websocket_context() else request
    view = current_app.view_functions.get(req.endpoint or "")
    if view is None:
        return  # no route: let the 404/405 handlers answer
    policy = policy_of(view)
    if policy is None:
        raise PermissionDenied("this route declares no permission")
    if policy.public:
        return
    der = peer_der()
    if der is None:
        raise Unauthenticated(
            "a client certificate is required", details={"reason": "no_certificate"}
        )
    c = ctx()
    ident = pki.verify_peer(der, c.ca.trusted, at=datetime.now(UTC))
    if await c.revocations.is_revoked(ident.serial):
        raise Unauthenticated("certificate has been revoked", details={"reason": "revoked"})
    if ident.kind not in policy.kinds:
        raise PermissionDenied(
            f"a {ident.kind} certificate cannot use this route",
            details={"reason": "wrong_profile", "allowed": sorted(policy.kinds)},
        )
    roles: tuple[Role, ...] = ()
    if ident.kind == "user":
        roles = await c.identities.user_roles(ident.name)
    who = Principal(
        kind=ident.kind,
        name=ident.name,
        serial=ident.serial,
        not_after=ident.not_after,
        roles=roles,
    )
    g.principal = who
    if policy.action is not None and ident.kind == "user":
        resource = policy.resource.format(**(req.view_args or {}))
        check(who, policy.action, resource)


def check(who: Principal, action: str, resource: str) -> rbac.Decision:
    """Raise PermissionDenied naming ``action`` and ``resource`` unless RBAC allows it."""
    decision = rbac.decide(who.roles, action, resource)
    if not decision.allowed:
        raise PermissionDenied(
            f"{who.subject} may not {action} on {resource}",
            details={"action": action, "resource": resource, "reason": decision.explain()},
        )
    return decision
