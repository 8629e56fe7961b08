"""From the objects of one apply and what labd holds now, the plan: each change, the RBAC
questions it asks, what is pruned and what the set records. Pure (no I/O): the route reads,
this decides, the store commits (lab.store's ``ApplyRepository.commit``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from attrs import Factory, evolve, frozen

from lab.errors import Conflict, Invalid, NotFound
from lab.model.declared import (
    APPLIED_BY_LABD,
    Action,
    Change,
    Claim,
    Declared,
    InventoryRow,
    ObjectKey,
    Plan,
    changed_fields,
)
from lab.model.mac import normalize_mac

Mode = Literal["apply", "delete"]

RESULT = {"create": "created", "update": "configured", "prune": "pruned", "delete": "deleted"}


@frozen(kw_only=True)
class Wanted:
    """One object of the apply: its declared state (labd kinds) or only its key (the kinds
    applied through their own operations), where it was written and the version it names."""

    key: ObjectKey
    obj: Declared | None
    resource_version: str | None = None
    where: str = ""
    applied: dict[str, Any] = Factory(dict)
    """What the set records of an object of the other kinds (its spec: references, never
    secret values), so a later prune knows it (a machine's MAC)."""


@frozen(kw_only=True)
class Outcome:
    plan: Plan
    checks: tuple[tuple[str, str], ...]
    """(action, resource) the caller must be allowed, each."""
    grants: tuple[tuple[ObjectKey, str], ...]
    """(user, role) granted: the caller must hold every rule of the role (no escalation)."""
    rules: tuple[tuple[ObjectKey, Any], ...]
    """(role, rule) written: the caller must hold each allow rule it writes."""
    groups: tuple[tuple[ObjectKey, str], ...]
    """(role, Kubernetes group) added: the caller must hold a role mapping to it."""
    unchanged: tuple[ObjectKey, ...]
    prune_external: tuple[InventoryRow, ...]
    """Objects of the other kinds the set recorded that the files no longer hold."""


def _noun(kind: str) -> str:
    return {"Role": "roles", "User": "users", "Server": "servers"}[kind]


def _where(w: Wanted) -> str:
    return f"{w.where}: " if w.where else ""


def _stale(w: Wanted, current: Declared | None, applied: Declared | None) -> Conflict:
    if current is None:
        return Conflict(
            f"{_where(w)}{w.key} was deleted since resourceVersion {w.resource_version}",
            details={"object": str(w.key), "fields": ["*"], "reason": "stale"},
        )
    base = applied if applied is not None and applied.version == w.resource_version else w.obj
    fields = changed_fields(base, current) or ["*"]
    return Conflict(
        f"{_where(w)}{w.key} changed since resourceVersion {w.resource_version} "
        f"(now {current.version}): {', '.join(fields)} moved; apply --force-conflicts "
        "to overwrite",
        details={
            "object": str(w.key),
            "fields": fields,
            "reason": "stale",
            "resourceVersion": current.version,
        },
    )


def _applied_state(row: InventoryRow | None, key: ObjectKey) -> Declared | None:
    if row is None or key.kind not in APPLIED_BY_LABD:
        return None
    return Declared(
        kind=key.kind,
        name=key.name,
        labels=dict(row.applied.get("labels", {})),
        spec=dict(row.applied.get("spec", {})),
    )


def _applied(obj: Declared | None) -> dict[str, Any]:
    if obj is None:
        return {}
    if obj.kind == "Server":
        return {"labels": dict(obj.labels)}
    return {"spec": obj.spec}


def _checks_of(change: Change) -> list[tuple[str, str]]:
    key = change.key
    resource = f"{key.kind.lower()}/{key.name}"
    if key.kind == "Server":
        return [("servers:label", resource)]
    if key.kind == "Role":
        verb = {"create": "create", "update": "update"}.get(change.action, "delete")
        return [(f"roles:{verb}", resource)]
    before: dict[str, Any] = (
        change.before.spec if change.before is not None else {"roles": [], "disabled": False}
    )
    after = change.after.spec if change.after is not None else before
    out: list[tuple[str, str]] = []
    if change.before is None:
        out.append(("users:create", resource))
    if set(after["roles"]) - set(before["roles"]):
        out.append(("users:grant", resource))
    if set(before["roles"]) - set(after["roles"]):
        out.append(("users:ungrant", resource))
    if bool(after["disabled"]) != bool(before["disabled"]):
        out.append(("users:disable" if after["disabled"] else "users:enable", resource))
    return out


def _external_checks(
    key: ObjectKey, spec: Mapping[str, Any], *, remove: bool
) -> list[tuple[str, str]]:
    """What the operation of a Machine, Cluster or App asks (labctl runs it, with the caller's
    identity): asked here too, so an apply cannot record or drop an object in a set's
    inventory that its caller could not install or remove itself."""
    if key.kind == "Cluster":
        verb = "delete" if remove else ("create" if "create" in spec else "import")
        return [(f"clusters:{verb}", f"cluster/{key.name}")]
    if key.kind == "App":
        where = f"cluster/{spec.get('cluster', '')}/namespace/{spec.get('namespace', 'default')}"
        return [("apps:uninstall" if remove else "apps:install", f"{where}/app/{key.name}")]
    try:
        mac = normalize_mac(str(spec.get("mac", "")))
    except Invalid:
        mac = str(spec.get("mac", ""))
    return [("provision:forget" if remove else "provision:install", f"machine/{mac}")]


def _removal(
    key: ObjectKey, current: Declared | None, applied: Mapping[str, Any], action: Action
) -> Change | None:
    """How a Role, User or Server leaves (prune or delete): roles are deleted, users disabled,
    servers lose the labels the set (or the document) declared. None: nothing to do."""
    if current is None:
        return None
    if key.kind == "Role":
        return Change(action=action, before=current, after=None, fields=("*",))
    if key.kind == "User":
        after = evolve(current, spec={**current.spec, "disabled": True})
    else:
        owned = set(applied.get("labels", {}))
        after = evolve(current, labels={k: v for k, v in current.labels.items() if k not in owned})
    fields = tuple(changed_fields(current, after))
    return Change(action=action, before=current, after=after, fields=fields) if fields else None


def plan_apply(
    wanted: Sequence[Wanted],
    current: Mapping[ObjectKey, Declared],
    inventory: Iterable[InventoryRow],
    *,
    set_name: str | None,
    prune: bool,
    force: bool,
    mode: Mode,
    who: str,
) -> Outcome:
    """Raises ``Conflict`` (stale resourceVersion, another set's object, a builtin role),
    ``NotFound`` (a server that is not enrolled) and ``Invalid`` (a user granted a role that
    neither exists nor is declared) before anything is written."""
    rows = {row.key: row for row in inventory}
    changes: list[Change] = []
    claims: list[Claim] = []
    unchanged: list[ObjectKey] = []
    external_checks: list[tuple[str, str]] = []
    declared_roles = {w.key.name for w in wanted if w.key.kind == "Role" and mode == "apply"}
    for w in wanted:
        row = rows.get(w.key)
        if row is not None and set_name is not None and row.set_name != set_name and not force:
            raise Conflict(
                f"{_where(w)}{w.key} belongs to apply set {row.set_name!r}",
                details={"object": str(w.key), "set": row.set_name, "reason": "other_set"},
            )
        if set_name is not None and mode == "apply":
            claims.append(
                Claim(
                    key=w.key,
                    owner=row.set_name if row else None,
                    applied=_applied(w.obj) if w.obj is not None else w.applied,
                )
            )
        if w.obj is None:
            external_checks += _external_checks(
                w.key, w.applied.get("spec", {}), remove=mode == "delete"
            )
            continue
        cur = current.get(w.key)
        moved = cur is None or cur.version != w.resource_version
        if w.resource_version is not None and not force and moved:
            raise _stale(w, cur, _applied_state(row, w.key))
        if mode == "delete":
            change = _removal(w.key, cur, _applied(w.obj), "delete")
            if change is None:
                unchanged.append(w.key)
            else:
                changes.append(change)
            continue
        if w.key.kind == "Server" and cur is None:
            raise NotFound(
                f"{_where(w)}server {w.key.name!r} is not enrolled: a Server document only "
                "labels an enrolled server",
                details={"object": str(w.key), "fields": ["metadata.name"]},
            )
        if w.key.kind == "User":
            for role in w.obj.spec["roles"]:
                if role not in declared_roles and ObjectKey(kind="Role", name=role) not in current:
                    raise Invalid(
                        f"{_where(w)}spec.roles: unknown role {role!r}",
                        details={"object": str(w.key), "fields": ["spec.roles"]},
                    )
        fields = changed_fields(cur, w.obj)
        if not fields:
            unchanged.append(w.key)
            continue
        if cur is not None and cur.builtin:
            raise Conflict(
                f"{_where(w)}role {w.key.name!r} is builtin: labd restores it at every start",
                details={"object": str(w.key), "fields": fields, "reason": "builtin"},
            )
        changes.append(
            Change(
                action="create" if cur is None else "update",
                before=cur,
                after=w.obj,
                fields=tuple(fields),
            )
        )
    release: list[ObjectKey] = []
    external: list[InventoryRow] = []
    if prune and set_name is not None and mode == "apply":
        keep = {w.key for w in wanted}
        for key, row in sorted(rows.items(), key=lambda kv: str(kv[0])):
            if row.set_name != set_name or key in keep:
                continue
            release.append(key)
            if key.kind not in APPLIED_BY_LABD:
                external.append(row)
                external_checks += _external_checks(key, row.applied.get("spec", {}), remove=True)
                continue
            change = _removal(key, current.get(key), row.applied, "prune")
            if change is not None:
                changes.append(change)
    # Roles are written first (users may be granted them), removed roles last (after their
    # holders were disabled or changed).
    order = {"Role": 0, "User": 1, "Server": 2}
    changes.sort(key=lambda c: (c.after is None, order[c.key.kind]))
    checks = [check for change in changes for check in _checks_of(change)] + external_checks
    reads = {w.key for w in wanted if w.obj is not None} | {c.key for c in changes}
    checks += [
        (f"{_noun(k.kind)}:get", f"{k.kind.lower()}/{k.name}") for k in sorted(reads, key=str)
    ]
    grants: list[tuple[ObjectKey, str]] = []
    rules: list[tuple[ObjectKey, Any]] = []
    groups: list[tuple[ObjectKey, str]] = []
    for change in changes:
        if change.after is None:
            continue
        if change.key.kind == "User":
            before = set(change.before.spec["roles"]) if change.before is not None else set()
            grants += [(change.key, r) for r in change.after.spec["roles"] if r not in before]
        elif change.key.kind == "Role":
            rules += [(change.key, r) for r in change.after.spec["rules"]]
            had = set(change.before.spec["kubernetes_groups"]) if change.before else set()
            groups += [
                (change.key, g) for g in change.after.spec["kubernetes_groups"] if g not in had
            ]
    plan = Plan(
        set_name=set_name,
        changes=tuple(changes),
        seen=tuple((k, current.get(k)) for k in sorted(reads, key=str)),
        claims=tuple(claims),
        release=tuple(release),
        force=force,
        who=who,
    )
    return Outcome(
        plan=plan,
        checks=tuple(dict.fromkeys(checks)),
        grants=tuple(grants),
        rules=tuple(rules),
        groups=tuple(groups),
        unchanged=tuple(unchanged),
        prune_external=tuple(external),
    )
