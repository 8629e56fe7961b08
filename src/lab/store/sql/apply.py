"""``labctl apply``'s storage: labd's own objects read in their declared form, the inventory of
each named set, and one transaction that writes a whole plan (docs/apply.md).

:meth:`Apply.commit` is all or nothing: every object the plan read is read again and compared
(a moved one fails the whole apply with ``Conflict`` naming its fields), the changes are
written as absolute states (not as deltas of a state that may be stale), the last enabled
admin is kept, and the inventory is updated, in the one write transaction that also carries
the request's audit entries (lab.store.audited).
"""

# ruff: noqa: S608 -- SQL is assembled only from constant column lists, never from input.

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import UTC, datetime

from lab.errors import Conflict, NotFound
from lab.model import Permission, Role, User
from lab.model.declared import (
    Change,
    Declared,
    InventoryRow,
    ObjectKey,
    Plan,
    changed_fields,
    role_object,
    server_object,
    user_object,
)
from lab.model.records import Effect
from lab.store.rows import SERVER_COLS, USER_COLS
from lab.store.rules import check_role_deletable, not_found
from lab.store.seed import SELF_SERVICE
from lab.store.sql.dialect import Runner, Tx
from lab.store.sql.identity import _role_of, upsert_role

ADMIN_ROLE = "admin"


def _find_role(tx: Tx, name: str) -> Role | None:
    try:
        return _role_of(tx, name)
    except NotFound:
        return None


def _find_user(tx: Tx, name: str) -> User | None:
    row = tx.one(f"SELECT {USER_COLS} FROM users WHERE name = ?", (name,))
    return None if row is None else tx.dialect.codec.user(row)


def _roles_of(tx: Tx, user_id: str) -> list[str]:
    return [r[0] for r in tx.all("SELECT role FROM user_roles WHERE user_id = ?", (user_id,))]


def read_object(tx: Tx, key: ObjectKey) -> Declared | None:
    """``key``'s current state in declared form; None when it does not exist."""
    if key.kind == "Role":
        role = _find_role(tx, key.name)
        return None if role is None else role_object(role, self_service=SELF_SERVICE)
    if key.kind == "User":
        user = _find_user(tx, key.name)
        return None if user is None else user_object(user, _roles_of(tx, user.id))
    if key.kind == "Server":
        row = tx.one(f"SELECT {SERVER_COLS} FROM servers WHERE name = ?", (key.name,))
        return None if row is None else server_object(tx.dialect.codec.server(row))
    raise NotFound(f"labd keeps no {key.kind} objects", details={"kind": key.kind})


def _enabled_admins(tx: Tx) -> int:
    (count,) = tx.one(
        "SELECT count(*) FROM users u JOIN user_roles r ON r.user_id = u.id"
        " WHERE r.role = ? AND NOT u.disabled",
        (ADMIN_ROLE,),
    )
    return int(count)


def _permissions(spec: dict[str, object]) -> tuple[Permission, ...]:
    rules = spec.get("rules") or []
    assert isinstance(rules, list)
    perms = tuple(
        Permission(effect=Effect(r["effect"]), action=r["action"], resource=r["resource"])
        for r in rules
    )
    # Every role labd makes lets its holders ask who they are and renew (lab.store.seed).
    return perms if SELF_SERVICE in perms else (SELF_SERVICE, *perms)


def _write_role(tx: Tx, change: Change) -> None:
    after = change.after
    if after is None:
        role = _role_of(tx, change.key.name)
        (holders,) = tx.one("SELECT count(*) FROM user_roles WHERE role = ?", (role.name,))
        check_role_deletable(role, int(holders))
        tx.run("DELETE FROM roles WHERE name = ?", (role.name,))
        return
    current = _find_role(tx, after.name)
    if current is not None and current.builtin:
        raise Conflict(
            f"role {after.name!r} is builtin: labd restores it at every start",
            details={"object": str(after.key)},
        )
    description = after.spec.get("description") or ""
    assert isinstance(description, str)
    groups = tuple(str(g) for g in after.spec.get("kubernetes_groups") or ())
    upsert_role(
        tx,
        Role(
            name=after.name,
            description=description,
            permissions=_permissions(after.spec),
            kubernetes_groups=groups,
        ),
    )


def _write_user(tx: Tx, change: Change) -> None:
    after = change.after
    assert after is not None, "users are disabled, never deleted"
    user = _find_user(tx, after.name)
    if user is None:
        user = User(name=after.name)
        tx.run(
            f"INSERT INTO users ({USER_COLS}) VALUES (?, ?, ?, ?)",
            tx.dialect.codec.user_params(user),
        )
    tx.run("UPDATE users SET disabled = ? WHERE id = ?", (bool(after.spec["disabled"]), user.id))
    tx.run("DELETE FROM user_roles WHERE user_id = ?", (user.id,))
    for role in after.spec["roles"]:
        if _find_role(tx, role) is None:
            raise not_found("role", role)
        tx.run("INSERT INTO user_roles (user_id, role) VALUES (?, ?)", (user.id, role))


def _write_server(tx: Tx, change: Change) -> None:
    after = change.after
    assert after is not None, "servers are never deleted by apply"
    touched = tx.run(
        "UPDATE servers SET labels = ? WHERE name = ?",
        (tx.dialect.codec.json(dict(after.labels)), after.name),
    )
    if touched == 0:
        raise not_found("server", after.name)


_WRITERS = {"Role": _write_role, "User": _write_user, "Server": _write_server}


def _check_seen(tx: Tx, plan: Plan) -> None:
    for key, before in plan.seen:
        now = read_object(tx, key)
        if (now is None) != (before is None) or (
            now is not None and before is not None and now.version != before.version
        ):
            fields = changed_fields(before, now)
            raise Conflict(
                f"{key} changed while this apply ran ({', '.join(fields)}); "
                "apply again to see the new state",
                details={"object": str(key), "fields": fields, "reason": "moved"},
            )


def _check_claims(tx: Tx, plan: Plan) -> None:
    for claim in plan.claims:
        row = tx.one(
            "SELECT set_name FROM apply_objects WHERE kind = ? AND name = ?",
            (claim.key.kind, claim.key.name),
        )
        owner = None if row is None else row[0]
        if owner not in (claim.owner, plan.set_name):
            raise Conflict(
                f"{claim.key} was recorded by set {owner!r} while this apply ran",
                details={"object": str(claim.key), "set": owner, "reason": "claimed"},
            )


def _commit(tx: Tx, plan: Plan, at: datetime) -> dict[str, str | None]:
    if not plan.force:
        _check_seen(tx, plan)
        _check_claims(tx, plan)
    admins = _enabled_admins(tx)
    for change in plan.changes:
        _WRITERS[change.key.kind](tx, change)
    if admins and not _enabled_admins(tx):
        raise Conflict(
            "this apply would leave no enabled user holding the admin role",
            details={"reason": "last_admin", "hint": "keep at least one admin in the files"},
        )
    codec = tx.dialect.codec
    for claim in plan.claims:
        assert plan.set_name is not None
        tx.run(
            "INSERT INTO apply_objects (kind, name, set_name, applied, applied_by, applied_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, name) DO UPDATE SET"
            " set_name = excluded.set_name, applied = excluded.applied,"
            " applied_by = excluded.applied_by, applied_at = excluded.applied_at",
            (
                claim.key.kind,
                claim.key.name,
                plan.set_name,
                codec.json(claim.applied),
                plan.who,
                codec.time(at),
            ),
        )
    for key in plan.release:
        tx.run(
            "DELETE FROM apply_objects WHERE kind = ? AND name = ? AND set_name = ?",
            (key.kind, key.name, plan.set_name),
        )
    versions: dict[str, str | None] = {}
    for change in plan.changes:
        now = read_object(tx, change.key)
        versions[str(change.key)] = None if now is None else now.version
    return versions


def _inventory(tx: Tx, set_name: str | None, keys: Sequence[ObjectKey]) -> list[InventoryRow]:
    cols = "kind, name, set_name, applied, applied_by"
    if set_name is not None:
        rows = list(
            tx.all(
                f"SELECT {cols} FROM apply_objects WHERE set_name = ? ORDER BY kind, name",
                (set_name,),
            )
        )
    else:
        rows = []
    seen = {(r[0], r[1]) for r in rows}
    for key in keys:
        if (key.kind, key.name) in seen:
            continue
        row = tx.one(
            f"SELECT {cols} FROM apply_objects WHERE kind = ? AND name = ?", (key.kind, key.name)
        )
        if row is not None:
            rows.append(row)
    return [
        InventoryRow(
            key=ObjectKey(kind=r[0], name=r[1]),
            set_name=r[2],
            applied=tx.dialect.codec.parse_json(r[3]),
            applied_by=r[4],
        )
        for r in rows
    ]


class Apply:
    def __init__(self, db: Runner) -> None:
        self._db = db

    async def current(self, keys: Sequence[ObjectKey]) -> dict[ObjectKey, Declared]:
        def op(tx: Tx) -> dict[ObjectKey, Declared]:
            found = {key: read_object(tx, key) for key in keys}
            return {key: obj for key, obj in found.items() if obj is not None}

        return await self._db.read(op)

    async def list(self, kind: str) -> builtins.list[Declared]:
        def op(tx: Tx) -> builtins.list[Declared]:
            table = {"Role": "roles", "User": "users", "Server": "servers"}.get(kind)
            if table is None:
                raise NotFound(f"labd keeps no {kind} objects", details={"kind": kind})
            names = [r[0] for r in tx.all(f"SELECT name FROM {table} ORDER BY name")]
            found = [read_object(tx, ObjectKey(kind=kind, name=n)) for n in names]
            return [obj for obj in found if obj is not None]

        return await self._db.read(op)

    async def inventory(
        self, set_name: str | None, keys: Sequence[ObjectKey] = ()
    ) -> builtins.list[InventoryRow]:
        return await self._db.read(_inventory, set_name, keys)

    async def commit(self, plan: Plan) -> dict[str, str | None]:
        return await self._db.write(_commit, plan, datetime.now(UTC))
