"""``labctl apply``, ``diff`` and ``delete -f`` against labd (docs/apply.md).

``POST /api/apply`` takes the documents of one apply (checked again here against their
schemas), plans it (lab.labd.apply.plan), asks RBAC about every object with the caller's own
roles, and writes the labd-side kinds (Role, User, Server) in one transaction with one audit
entry per change. Machine, Cluster and App documents are applied by labctl through their own
operations; labd records them in the set's inventory and names those a prune drops.
``GET /api/apply/objects/KIND[/NAME]`` exports objects in the form apply takes.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from attrs import Factory, frozen
from quart import Blueprint

from lab.apply.documents import (
    API_VERSION,
    Document,
    Source,
    check_document,
    declared,
    document_of,
    is_labd_kind,
)
from lab.errors import Invalid, NotFound, PermissionDenied
from lab.labd.access import escalation, rbac
from lab.labd.access.auth import Principal, check, principal, requires
from lab.labd.access.user_sessions import DISABLED
from lab.labd.api.bodies import body
from lab.labd.apply.plan import RESULT, Outcome, Wanted, plan_apply
from lab.labd.audit.entries import also_record, set_action
from lab.labd.context import ctx
from lab.model import AuditEntry, Effect, Permission, Role
from lab.model.declared import Change, ObjectKey
from lab.model.text import Name
from lab.store import SELF_SERVICE

bp = Blueprint("apply", __name__)

SET_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?")
MAX_OBJECTS = 2000


@frozen(kw_only=True)
class Where:
    file: Name
    index: int


@frozen(kw_only=True)
class ApplyObject:
    kind: Name
    name: Name
    labels: dict[Name, Name] | None = None
    spec: dict[str, Any] = Factory(dict)
    resource_version: Name | None = None
    source: Where | None = None


@frozen(kw_only=True)
class ApplyRequest:
    objects: list[ApplyObject]
    set: Name | None = None
    prune: bool = False
    dry_run: bool = False
    force_conflicts: bool = False
    mode: Name = "apply"


def _document(obj: ApplyObject, i: int) -> Document:
    meta: dict[str, Any] = {"name": obj.name}
    if obj.labels is not None:
        meta["labels"] = obj.labels
    if obj.resource_version is not None:
        meta["resourceVersion"] = obj.resource_version
    raw = {"apiVersion": API_VERSION, "kind": obj.kind, "metadata": meta, "spec": obj.spec}
    where = obj.source
    source = Source(
        file=where.file[:512] if where else f"body.objects[{i}]", index=where.index if where else 0
    )
    return check_document(raw, source)


def _check_request(req: ApplyRequest) -> list[Document]:
    if req.mode not in ("apply", "delete"):
        raise Invalid("mode must be apply or delete", details={"fields": ["body.mode"]})
    if req.set is not None and not SET_NAME.fullmatch(req.set):
        raise Invalid(
            "set name must be lowercase letters, digits, '-' and '.' (at most 63)",
            details={"fields": ["body.set"]},
        )
    if req.prune and req.set is None:
        raise Invalid("--prune needs --set NAME", details={"fields": ["body.prune"]})
    if len(req.objects) > MAX_OBJECTS:
        raise Invalid(f"at most {MAX_OBJECTS} objects", details={"fields": ["body.objects"]})
    docs = [_document(obj, i) for i, obj in enumerate(req.objects)]
    seen: set[ObjectKey] = set()
    for doc in docs:
        if doc.key in seen:
            raise Invalid(
                f"{doc.source}: {doc.key} is declared twice", details={"fields": ["body.objects"]}
            )
        seen.add(doc.key)
    return docs


def _wanted(doc: Document) -> Wanted:
    return Wanted(
        key=doc.key,
        obj=declared(doc) if is_labd_kind(doc.kind) else None,
        resource_version=doc.resource_version,
        where=str(doc.source),
        applied={} if is_labd_kind(doc.kind) else {"spec": doc.spec},
    )


async def _role_rules(name: str, outcome: Outcome) -> tuple[tuple[Permission, ...], set[str]]:
    """The rules and Kubernetes groups of role ``name`` as this apply leaves it."""
    for change in outcome.plan.changes:
        if change.key == ObjectKey(kind="Role", name=name) and change.after is not None:
            spec = change.after.spec
            rules = (*(_permission(r) for r in spec["rules"]), SELF_SERVICE)
            return rules, set(spec["kubernetes_groups"])
    role = await ctx().store.roles.get(name)
    return role.permissions, set(role.kubernetes_groups)


def _permission(rule: dict[str, str]) -> Permission:
    return Permission(
        effect=Effect(rule["effect"]), action=rule["action"], resource=rule["resource"]
    )


async def _authorize(who: Principal, outcome: Outcome) -> None:
    """The caller's own RBAC for each object, and no escalation: a rule written into a role
    or a role granted to a user must give nothing the caller does not already hold."""
    for action, resource in outcome.checks:
        check(who, action, resource)
    held: tuple[Role, ...] = who.roles
    for role_key, rule in outcome.rules:
        perm = _permission(rule)
        if not rbac.covers(held, perm):
            raise PermissionDenied(
                f"{who.subject} may not write '{perm.effect} {perm.action} {perm.resource}' "
                f"into {role_key}: it allows more than {who.subject} holds",
                details={"object": str(role_key), "reason": "escalation"},
            )
    for role_key, group in outcome.groups:
        if escalation.missing_groups(who, [group]):
            raise PermissionDenied(
                f"{who.subject} may not map {role_key} to Kubernetes group {group!r}: "
                f"no role of {who.subject} maps to it",
                details={"object": str(role_key), "reason": "escalation"},
            )
    for user_key, role in outcome.grants:
        perms, groups = await _role_rules(role, outcome)
        if missing := escalation.missing_groups(who, groups):
            raise PermissionDenied(
                f"{who.subject} may not grant role {role!r} to {user_key}: it maps to "
                f"Kubernetes group {missing[0]!r}, which "
                f"{who.subject} does not hold",
                details={"object": str(user_key), "reason": "escalation", "role": role},
            )
        for perm in perms:
            if not rbac.covers(held, perm):
                raise PermissionDenied(
                    f"{who.subject} may not grant role {role!r} to {user_key}: it allows "
                    f"'{perm.action} {perm.resource}', which {who.subject} does not hold",
                    details={"object": str(user_key), "reason": "escalation", "role": role},
                )


def _result(change: Change) -> dict[str, Any]:
    key = change.key
    action = RESULT[change.action]
    if key.kind == "User" and change.action in ("prune", "delete"):
        action = "disabled"
    return {
        "kind": key.kind,
        "name": key.name,
        "action": action,
        "fields": list(change.fields),
        "before": document_of(change.before) if change.before is not None else None,
        "after": document_of(change.after) if change.after is not None else None,
    }


def _audit_entries(changes: tuple[Change, ...], set_name: str | None) -> Any:
    def build(first: AuditEntry) -> list[AuditEntry]:
        return [
            AuditEntry(
                user=first.user,
                session=first.session,
                source=first.source,
                action=f"apply:{c.action}",
                resource=str(c.key),
                details={
                    "set": set_name,
                    "object": str(c.key),
                    "fields": list(c.fields),
                    "follows": "apply",
                    "resourceVersion": c.after.version if c.after is not None else None,
                },
            )
            for c in changes
        ]

    return build


async def _after_commit(changes: tuple[Change, ...]) -> None:
    """What disabling a user does beyond the row (as ``users disable``): its certificates are
    revoked and its sessions closed; role changes reach the other replicas' sessions."""
    c = ctx()
    if any(ch.key.kind in ("User", "Role") for ch in changes):
        c.identities.role_cache.forget()  # before anything below can fail
    for change in changes:
        if change.key.kind != "User" or change.after is None:
            continue
        was = change.before is not None and change.before.spec["disabled"]
        if change.after.spec["disabled"] and not was:
            c.user_sessions.close_user(change.key.name, DISABLED)
            with contextlib.suppress(NotFound):  # never enrolled, or already revoked
                await c.identities.revoke_target(f"user/{change.key.name}")
    if any(ch.key.kind in ("User", "Role") for ch in changes):
        await c.store.replicas.bump_changes()


@bp.post("/api/apply")
@requires("user", action="apply:run", resource="apply/*")
async def apply() -> dict[str, Any]:
    """Apply, dry-run or delete the documents of one ``labctl apply -f``; see the module.

    ``apply:run`` on ``apply/*`` lets a caller use apply at all; each object then needs what
    its own route would (``roles:create`` on ``role/NAME``, ``users:grant`` on ``user/NAME``,
    ``servers:label`` on ``server/NAME``, ...), and the caller must already hold every allow
    rule it writes into a role or grants with one."""
    req = await body(ApplyRequest)
    set_action(
        "apply:dry-run" if req.dry_run else ("apply:delete" if req.mode == "delete" else "apply"),
        f"apply/{req.set or '-'}",
    )
    docs = _check_request(req)
    wanted = [_wanted(d) for d in docs]
    store = ctx().store
    rows = await store.apply.inventory(req.set, [w.key for w in wanted])
    keys = {w.key for w in wanted if w.obj is not None}
    keys |= {r.key for r in rows if is_labd_kind(r.key.kind)}
    # The roles users are granted, so the plan knows which exist.
    keys |= {
        ObjectKey(kind="Role", name=role)
        for w in wanted
        if w.obj is not None and w.key.kind == "User"
        for role in w.obj.spec["roles"]
    }
    current = await store.apply.current(sorted(keys, key=str))
    who = principal()
    outcome = plan_apply(
        wanted,
        current,
        rows,
        set_name=req.set,
        prune=req.prune,
        force=req.force_conflicts,
        mode="delete" if req.mode == "delete" else "apply",
        who=who.subject,
    )
    await _authorize(who, outcome)
    plan = outcome.plan
    results = [_result(c) for c in plan.changes]
    for key in outcome.unchanged:
        now = current.get(key)
        results.append(
            {
                "kind": key.kind,
                "name": key.name,
                "action": "unchanged",
                "fields": [],
                "before": document_of(now) if now is not None else None,
                "after": document_of(now) if now is not None else None,
            }
        )
    answer: dict[str, Any] = {
        "set": req.set,
        "dry_run": req.dry_run,
        "changes": len(plan.changes),
        "results": results,
        "prune_external": [
            {"kind": r.key.kind, "name": r.key.name, "spec": r.applied.get("spec", {})}
            for r in outcome.prune_external
        ],
    }
    if req.dry_run or not (plan.changes or plan.claims or plan.release):
        return answer
    also_record(_audit_entries(plan.changes, req.set))
    await store.apply.commit(plan)
    await _after_commit(plan.changes)
    return answer


async def _export_all(kind: str) -> dict[str, Any]:
    return {"items": [document_of(o) for o in await ctx().store.apply.list(kind)]}


async def _export_one(kind: str, name: str) -> dict[str, Any]:
    key = ObjectKey(kind=kind, name=name)
    found = (await ctx().store.apply.current([key])).get(key)
    if found is None:
        resource = f"{kind.lower()}/{name}"
        raise NotFound(f"{resource} not found", details={"resource": resource})
    return document_of(found)


@bp.get("/api/apply/objects/roles")
@requires("user", action="roles:list", resource="role/*")
async def export_roles() -> dict[str, Any]:
    """Every role as an apply document."""
    return await _export_all("Role")


@bp.get("/api/apply/objects/roles/<name>")
@requires("user", action="roles:get", resource="role/{name}")
async def export_role(name: str) -> dict[str, Any]:
    return await _export_one("Role", name)


@bp.get("/api/apply/objects/users")
@requires("user", action="users:list", resource="user/*")
async def export_users() -> dict[str, Any]:
    """Every user as an apply document."""
    return await _export_all("User")


@bp.get("/api/apply/objects/users/<name>")
@requires("user", action="users:get", resource="user/{name}")
async def export_user(name: str) -> dict[str, Any]:
    return await _export_one("User", name)


@bp.get("/api/apply/objects/servers")
@requires("user", action="servers:list", resource="server/*")
async def export_servers() -> dict[str, Any]:
    """Every server's labels as an apply document."""
    return await _export_all("Server")


@bp.get("/api/apply/objects/servers/<name>")
@requires("user", action="servers:get", resource="server/{name}")
async def export_server(name: str) -> dict[str, Any]:
    return await _export_one("Server", name)
