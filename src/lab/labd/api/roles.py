"""Roles and their rules, and the questions RBAC answers: can-i (about yourself) and explain
(about anyone, for administrators)."""

from __future__ import annotations

import re
from typing import Any

from attrs import Factory, evolve, frozen
from quart import Blueprint, request

from lab.errors import Conflict, Invalid, NotFound
from lab.labd.access import escalation, rbac
from lab.labd.access.auth import principal, requires
from lab.labd.api.answers import created
from lab.labd.api.bodies import body
from lab.labd.audit.entries import annotate
from lab.labd.context import ctx
from lab.model import Effect, Permission, Role
from lab.model.text import Name
from lab.store import SELF_SERVICE

bp = Blueprint("roles", __name__)

_ROLE_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
MAX_PATTERN = 256
MAX_RULES = 500


@frozen(kw_only=True)
class Rule:
    effect: Effect
    action: Name
    resource: Name


@frozen(kw_only=True)
class CreateRole:
    name: Name
    description: Name = ""
    permissions: list[Rule] = Factory(list)
    kubernetes_groups: list[Name] = Factory(list)


@frozen(kw_only=True)
class KubernetesGroups:
    groups: list[Name]


# Kubernetes group names as kube-apiserver takes them from Impersonate-Group; no spaces, no
# commas (a comma would read as two groups to some proxies down the line).
_KUBE_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._@/-]{0,252}")
MAX_KUBE_GROUPS = 32


def check_kube_groups(groups: list[str], field: str) -> tuple[str, ...]:
    """Each group once, in the order given; Invalid naming the entry that is wrong."""
    if len(groups) > MAX_KUBE_GROUPS:
        raise Invalid(f"at most {MAX_KUBE_GROUPS} Kubernetes groups", details={"fields": [field]})
    for i, group in enumerate(groups):
        if not _KUBE_GROUP.fullmatch(group):
            raise Invalid(
                "a Kubernetes group is 1-253 letters, digits and ':._@/-'",
                details={"fields": [f"{field}[{i}]"]},
            )
    return tuple(dict.fromkeys(groups))


def check_pattern(value: str, field: str) -> str:
    """A pattern is 1-256 printable characters without spaces; ``*`` is the only wildcard."""
    if not value or len(value) > MAX_PATTERN or not value.isprintable() or " " in value:
        raise Invalid(
            f"{field.rsplit('.', 1)[-1]} must be 1-{MAX_PATTERN} printable characters "
            "without spaces",
            details={"fields": [field]},
        )
    return value


def to_permission(rule: Rule, where: str) -> Permission:
    return Permission(
        effect=rule.effect,
        action=check_pattern(rule.action, f"{where}.action"),
        resource=check_pattern(rule.resource, f"{where}.resource"),
    )


def role_view(role: Role) -> dict[str, Any]:
    return {
        "name": role.name,
        "description": role.description,
        "builtin": role.builtin,
        "kubernetes_groups": list(role.kubernetes_groups),
        "permissions": [
            {"effect": p.effect.value, "action": p.action, "resource": p.resource}
            for p in role.permissions
        ],
    }


def decision_view(decision: rbac.Decision, user: str) -> dict[str, Any]:
    def rule(r: rbac.Rule) -> dict[str, str]:
        p = r.permission
        return {
            "role": r.role,
            "effect": p.effect.value,
            "action": p.action,
            "resource": p.resource,
        }

    return {
        "user": user,
        "action": decision.action,
        "resource": decision.resource,
        "allowed": decision.allowed,
        "matched": [rule(r) for r in decision.matched],
        "decided_by": rule(decision.decided_by) if decision.decided_by is not None else None,
        "reason": decision.explain(),
    }


def _query(name: str, *, required: bool = True) -> str:
    value = request.args.get(name, "")
    if required and not value:
        raise Invalid(
            f"query parameter {name!r} is required", details={"fields": [f"query.{name}"]}
        )
    return check_pattern(value, f"query.{name}") if value else value


async def _mutable(name: str) -> Role:
    role = await ctx().store.roles.get(name)
    if role.builtin:
        raise Conflict(
            f"role {name!r} is builtin: labd restores it at every start",
            details={"hint": "create a role of your own (labctl roles create) and grant that"},
        )
    return role


@bp.get("/api/roles")
@requires("user", action="roles:list", resource="role/*")
async def list_() -> dict[str, Any]:
    return {"items": [role_view(r) for r in await ctx().store.roles.list()]}


@bp.get("/api/roles/<name>")
@requires("user", action="roles:get", resource="role/{name}")
async def get(name: str) -> dict[str, Any]:
    return role_view(await ctx().store.roles.get(name))


@bp.post("/api/roles")
@requires("user", action="roles:create", resource="role/*")
@created
async def create() -> dict[str, Any]:
    req = await body(CreateRole)
    if not _ROLE_NAME.fullmatch(req.name):
        raise Invalid(
            "role name must be lowercase letters, digits, '_', '.', '-' (max 64)",
            details={"fields": ["body.name"]},
        )
    if len(req.permissions) > MAX_RULES:
        raise Invalid(f"at most {MAX_RULES} rules", details={"fields": ["body.permissions"]})
    perms = tuple(to_permission(r, f"body.permissions[{i}]") for i, r in enumerate(req.permissions))
    groups = check_kube_groups(req.kubernetes_groups, "body.kubernetes_groups")
    who, target = principal(), f"role/{req.name}"
    for perm in perms:
        escalation.check_rule(who, target, perm)
    escalation.check_groups(who, target, groups)
    # Whoever holds the role can ask who they are, renew their certificate and ask can-i;
    # written as a visible first rule, so explain shows it and an admin may remove it.
    if SELF_SERVICE not in perms:
        perms = (SELF_SERVICE, *perms)
    store = ctx().store
    try:
        await store.roles.get(req.name)
    except NotFound:
        pass
    else:
        raise Conflict(f"role {req.name!r} already exists", details={"name": req.name})
    annotate(role=req.name)  # before the write: the details commit with the change
    role = await store.roles.upsert(
        Role(
            name=req.name,
            description=req.description,
            permissions=perms,
            kubernetes_groups=groups,
        )
    )
    return role_view(role)


@bp.post("/api/roles/<name>/kubernetes-groups")
@requires("user", action="roles:update", resource="role/{name}")
async def set_kubernetes_groups(name: str) -> dict[str, Any]:
    """Replace the Kubernetes groups the /k8s proxy impersonates for holders of the role."""
    groups = check_kube_groups((await body(KubernetesGroups)).groups, "body.groups")
    role = await _mutable(name)
    # Groups the role already maps to may stay; a new one must be the caller's own.
    escalation.check_groups(principal(), f"role/{name}", set(groups) - set(role.kubernetes_groups))
    annotate(kubernetes_groups=list(groups))
    updated = await ctx().store.roles.upsert(evolve(role, kubernetes_groups=groups))
    return role_view(updated)


@bp.delete("/api/roles/<name>")
@requires("user", action="roles:delete", resource="role/{name}")
async def delete(name: str) -> dict[str, Any]:
    await ctx().store.roles.delete(name)
    return {"deleted": name}


@bp.post("/api/roles/<name>/rules")
@requires("user", action="roles:update", resource="role/{name}")
async def add_rule(name: str) -> dict[str, Any]:
    """Append an allow or deny rule (a rule the role already has stays where it is)."""
    perm = to_permission(await body(Rule), "body")
    await _mutable(name)
    escalation.check_rule(principal(), f"role/{name}", perm)
    annotate(effect=perm.effect.value, rule_action=perm.action, rule_resource=perm.resource)
    return role_view(await ctx().store.roles.add_permission(name, perm))


@bp.post("/api/roles/<name>/rules/remove")
@requires("user", action="roles:update", resource="role/{name}")
async def remove_rule(name: str) -> dict[str, Any]:
    perm = to_permission(await body(Rule), "body")
    role = await _mutable(name)
    if perm not in role.permissions:
        raise NotFound(f"role {name!r} has no rule {perm.effect} {perm.action} {perm.resource}")
    annotate(effect=perm.effect.value, rule_action=perm.action, rule_resource=perm.resource)
    return role_view(await ctx().store.roles.remove_permission(name, perm))


@bp.get("/api/auth/can-i")
@requires("user", action="auth:can-i", resource="user/self")
async def can_i() -> dict[str, Any]:
    """Whether the caller may do ``action`` on ``resource``: always 200, see ``allowed``."""
    action, resource = _query("action"), _query("resource")
    who = principal()
    return decision_view(rbac.decide(who.roles, action, resource), who.name)


@bp.get("/api/auth/explain")
@requires("user", action="auth:explain", resource="user/*")
async def explain() -> dict[str, Any]:
    """Which rules of ``user``'s roles match ``action`` on ``resource``, and which decided."""
    name, action, resource = _query("user"), _query("action"), _query("resource")
    store = ctx().store
    user = await store.users.get_by_name(name)
    roles = [await store.roles.get(r) for r in await store.users.roles_of(user.id)]
    view = decision_view(rbac.decide(roles, action, resource), user.name)
    view["roles"] = [r.name for r in roles]
    view["disabled"] = user.disabled
    if user.disabled:
        view["allowed"] = False
        view["reason"] = f"denied: user {user.name!r} is disabled ({view['reason']})"
    return view
