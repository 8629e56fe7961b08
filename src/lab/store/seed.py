"""The builtin roles, as data: written on every open, reused by RBAC (``lab.labd.rbac``).

Deny overrides allow and no match is deny, so ``operator`` lists its denials explicitly only to
make ``labctl auth explain`` name the rule that refused an action.
"""

from __future__ import annotations

from lab.model import Effect, Permission, Role


def _allow(action: str, resource: str) -> Permission:
    return Permission(effect=Effect.ALLOW, action=action, resource=resource)


def _deny(action: str, resource: str) -> Permission:
    return Permission(effect=Effect.DENY, action=action, resource=resource)


ADMIN = Role(
    name="admin",
    description="Everything, including users, roles, tokens and the CA.",
    builtin=True,
    permissions=(_allow("*:*", "*"),),
)

OPERATOR = Role(
    name="operator",
    description="Runs the fleet: servers, exec, logs, provisioning, reading the audit log.",
    builtin=True,
    permissions=(
        _allow("servers:*", "server/*"),
        _allow("exec:*", "server/*"),
        _allow("logs:*", "server/*"),
        _allow("provision:*", "machine/*"),
        _allow("audit:read", "audit/*"),
        _deny("users:*", "*"),
        _deny("roles:*", "*"),
        _deny("tokens:*", "*"),
        _deny("ca:*", "*"),
        _deny("certs:*", "*"),
    ),
)

VIEWER = Role(
    name="viewer",
    description="Read-only view of servers and machines; no exec, no logs.",
    builtin=True,
    permissions=(
        _allow("servers:get", "server/*"),
        _allow("servers:list", "server/*"),
        _allow("provision:get", "machine/*"),
        _allow("provision:list", "machine/*"),
        _deny("exec:*", "*"),
        _deny("logs:*", "*"),
    ),
)

BUILTIN_ROLES: tuple[Role, ...] = (ADMIN, OPERATOR, VIEWER)
"""Upserted on every open of a store, so a changed definition here reaches old databases."""
