"""The builtin roles, as data: written on every open, reused by RBAC (``lab.labd.access.rbac``).

Deny overrides allow and no match is deny, so ``operator`` and ``viewer`` list their denials
explicitly only to make ``labctl auth explain`` name the rule that refused an action.

Every role a person holds needs the self-service rules: ``auth:whoami`` on ``user/self``,
``auth:renew`` on ``cert/self`` and ``auth:can-i`` on ``user/self``; :data:`SELF_SERVICE`
grants them with one ``*/self`` pattern, which can never match another identity's resource.
"""

from __future__ import annotations

from lab.model import Effect, Permission, Role


def _allow(action: str, resource: str) -> Permission:
    return Permission(effect=Effect.ALLOW, action=action, resource=resource)


def _deny(action: str, resource: str) -> Permission:
    return Permission(effect=Effect.DENY, action=action, resource=resource)


SELF_SERVICE = _allow("auth:*", "*/self")

ADMIN = Role(
    name="admin",
    description="Everything, including users, roles, tokens and the CA.",
    builtin=True,
    permissions=(_allow("*:*", "*"),),
    # Through labd's /k8s proxy an admin is a cluster admin too (Impersonate-Group).
    kubernetes_groups=("system:masters",),
)

OPERATOR = Role(
    name="operator",
    description="Runs the fleet: servers, exec, logs, provisioning, reading the audit log; "
    "no users, roles, tokens or CA administration.",
    builtin=True,
    permissions=(
        SELF_SERVICE,
        _allow("servers:*", "server/*"),
        _allow("exec:*", "server/*"),
        _allow("logs:*", "server/*"),
        _allow("provision:*", "machine/*"),
        _allow("audit:read", "audit/*"),
        _allow("audit:verify", "audit/*"),
        _allow("clusters:*", "cluster/*"),
        _allow("artifacts:*", "artifact/*"),
        # A cluster's kubeconfig holds its admin credentials: admins only.
        _deny("clusters:read-credentials", "*"),
        # Every verb through labd's /k8s proxy; the cluster's own RBAC still judges
        # labd:USER (the role maps to no Kubernetes group).
        _allow("kube:*", "cluster/*"),
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
        SELF_SERVICE,
        _allow("servers:get", "server/*"),
        _allow("servers:list", "server/*"),
        _allow("provision:get", "machine/*"),
        _allow("provision:list", "machine/*"),
        _allow("clusters:read", "cluster/*"),
        _allow("artifacts:read", "artifact/*"),
        _deny("clusters:read-credentials", "*"),
        _allow("kube:discover", "cluster/*"),
        _allow("kube:get", "cluster/*"),
        _allow("kube:list", "cluster/*"),
        _allow("kube:watch", "cluster/*"),
        _deny("exec:*", "*"),
        _deny("logs:*", "*"),
        # The same refusals under the servers: prefix, whichever spelling a route declares.
        _deny("servers:exec", "*"),
        _deny("servers:logs", "*"),
    ),
)

BUILTIN_ROLES: tuple[Role, ...] = (ADMIN, OPERATOR, VIEWER)
"""Upserted on every open of a store, so a changed definition here reaches old databases."""
