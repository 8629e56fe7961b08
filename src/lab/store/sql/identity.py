"""Repositories of identity: users, roles and their permissions, join tokens, certificates."""

# ruff: noqa: S608 -- SQL is assembled only from constant column lists, never from input.

from __future__ import annotations

import builtins
from collections.abc import Iterable
from datetime import datetime

from lab.errors import Conflict
from lab.model import Certificate, JoinToken, Permission, Role, User
from lab.store.rows import (
    CERT_COLS,
    JOIN_TOKENS_COLS,
    PERMISSION_COLS,
    ROLE_COLS,
    USER_COLS,
    permission_params,
)
from lab.store.rules import (
    already_exists,
    before_use,
    check_role_deletable,
    not_found,
    token_refusal,
)
from lab.store.sql.dialect import Runner, Tx

# --- users ----------------------------------------------------------------------------------


def _user_where(tx: Tx, column: str, key: str) -> User:
    row = tx.one(f"SELECT {USER_COLS} FROM users WHERE {column} = ?", (key,))
    if row is None:
        raise not_found("user", key)
    return tx.dialect.codec.user(row)


class Users:
    def __init__(self, db: Runner) -> None:
        self._db = db

    async def create(self, user: User) -> User:
        def op(tx: Tx) -> User:
            try:
                tx.run(
                    f"INSERT INTO users ({USER_COLS}) VALUES (?, ?, ?, ?)",
                    tx.dialect.codec.user_params(user),
                )
            except tx.dialect.unique_violation as exc:
                raise already_exists("user", user.name) from exc
            return _user_where(tx, "id", user.id)

        return await self._db.write(op)

    async def get(self, user_id: str) -> User:
        return await self._db.read(_user_where, "id", user_id)

    async def get_by_name(self, name: str) -> User:
        return await self._db.read(_user_where, "name", name)

    async def list(self) -> list[User]:
        def op(tx: Tx) -> list[User]:
            rows = tx.all(f"SELECT {USER_COLS} FROM users ORDER BY name")
            return [tx.dialect.codec.user(r) for r in rows]

        return await self._db.read(op)

    async def set_disabled(self, name: str, disabled: bool) -> User:
        def op(tx: Tx) -> User:
            if tx.run("UPDATE users SET disabled = ? WHERE name = ?", (disabled, name)) == 0:
                raise not_found("user", name)
            return _user_where(tx, "name", name)

        return await self._db.write(op)

    async def grant(self, user_id: str, role: str) -> None:
        def op(tx: Tx) -> None:
            _user_where(tx, "id", user_id)
            _role_of(tx, role)
            tx.run(
                "INSERT INTO user_roles (user_id, role) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (user_id, role),
            )

        await self._db.write(op)

    async def revoke(self, user_id: str, role: str) -> None:
        """Take a role away; taking away a role the user does not hold is not an error."""

        def op(tx: Tx) -> None:
            _user_where(tx, "id", user_id)
            tx.run("DELETE FROM user_roles WHERE user_id = ? AND role = ?", (user_id, role))

        await self._db.write(op)

    async def roles_of(self, user_id: str) -> builtins.list[str]:
        def op(tx: Tx) -> builtins.list[str]:
            _user_where(tx, "id", user_id)
            rows = tx.all("SELECT role FROM user_roles WHERE user_id = ? ORDER BY role", (user_id,))
            return [r[0] for r in rows]

        return await self._db.read(op)


# --- roles ----------------------------------------------------------------------------------


def _role_of(tx: Tx, name: str) -> Role:
    row = tx.one(f"SELECT {ROLE_COLS} FROM roles WHERE name = ?", (name,))
    if row is None:
        raise not_found("role", name)
    perms = tx.all(
        f"SELECT {PERMISSION_COLS} FROM role_permissions WHERE role = ? ORDER BY position",
        (name,),
    )
    return tx.dialect.codec.role(row, perms)


def _all_roles(tx: Tx) -> list[Role]:
    # Two queries for the whole list, not one per role.
    perms: dict[str, list[tuple[object, ...]]] = {}
    for row in tx.all(
        f"SELECT role, {PERMISSION_COLS} FROM role_permissions ORDER BY role, position"
    ):
        perms.setdefault(row[0], []).append(tuple(row[1:]))
    rows = tx.all(f"SELECT {ROLE_COLS} FROM roles ORDER BY name")
    return [tx.dialect.codec.role(row, perms.get(row[0], ())) for row in rows]


def _write_permissions(tx: Tx, role: str, permissions: Iterable[Permission], start: int) -> None:
    tx.many(
        "INSERT INTO role_permissions (role, effect, action, resource, position)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        permission_params(role, permissions, start),
    )


def upsert_role(tx: Tx, role: Role) -> None:
    """Create or replace ``role`` with exactly its permissions, inside the caller's transaction."""
    tx.run(
        f"INSERT INTO roles ({ROLE_COLS}) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET"
        " description = excluded.description, builtin = excluded.builtin,"
        " kubernetes_groups = excluded.kubernetes_groups",
        tx.dialect.codec.role_params(role),
    )
    tx.run("DELETE FROM role_permissions WHERE role = ?", (role.name,))
    _write_permissions(tx, role.name, role.permissions, 0)


def seed_roles(tx: Tx, roles: Iterable[Role]) -> None:
    """Upsert the builtin roles (every open, so changed definitions reach old databases)."""
    for role in roles:
        upsert_role(tx, role)


class Roles:
    def __init__(self, db: Runner) -> None:
        self._db = db

    async def upsert(self, role: Role) -> Role:
        def op(tx: Tx) -> Role:
            upsert_role(tx, role)
            return _role_of(tx, role.name)

        return await self._db.write(op)

    async def get(self, name: str) -> Role:
        return await self._db.read(_role_of, name)

    async def list(self) -> list[Role]:
        return await self._db.read(_all_roles)

    async def delete(self, name: str) -> None:
        def op(tx: Tx) -> None:
            role = _role_of(tx, name)
            (holders,) = tx.one("SELECT count(*) FROM user_roles WHERE role = ?", (name,))
            check_role_deletable(role, int(holders))
            tx.run("DELETE FROM roles WHERE name = ?", (name,))

        await self._db.write(op)

    async def add_permission(self, name: str, permission: Permission) -> Role:
        """Append a rule (a rule the role already has is left where it is)."""

        def op(tx: Tx) -> Role:
            _role_of(tx, name)
            (last,) = tx.one(
                "SELECT coalesce(max(position), -1) FROM role_permissions WHERE role = ?",
                (name,),
            )
            _write_permissions(tx, name, [permission], int(last) + 1)
            return _role_of(tx, name)

        return await self._db.write(op)

    async def remove_permission(self, name: str, permission: Permission) -> Role:
        def op(tx: Tx) -> Role:
            _role_of(tx, name)
            tx.run(
                "DELETE FROM role_permissions"
                " WHERE role = ? AND effect = ? AND action = ? AND resource = ?",
                (name, permission.effect.value, permission.action, permission.resource),
            )
            return _role_of(tx, name)

        return await self._db.write(op)


# --- join tokens ----------------------------------------------------------------------------


def find_token(tx: Tx, token_id: str) -> JoinToken | None:
    row = tx.one(f"SELECT {JOIN_TOKENS_COLS} FROM join_tokens WHERE id = ?", (token_id,))
    return None if row is None else tx.dialect.codec.token(row)


def _token_of(tx: Tx, token_id: str) -> JoinToken:
    token = find_token(tx, token_id)
    if token is None:
        raise not_found("token", token_id)
    return token


CONSUME_TOKEN = (
    "UPDATE join_tokens SET uses = uses + 1"
    " WHERE id = ? AND revoked_at IS NULL AND expires_at > ? AND ("
    "  (reusable AND (max_uses IS NULL OR uses < max_uses))"
    "  OR (NOT reusable AND uses = 0))"
    f" RETURNING {JOIN_TOKENS_COLS}"
)
"""One use of a join token (parameters: id, time), the row after it; no row when the token is
unknown, revoked, expired or used up. One conditional UPDATE is the whole decision, so two
racing consumers (here, in another process on the same SQLite file, or on another replica)
never both win a one-time token. ``reusable`` is a boolean in both (SQLite's 0/1 reads as one).
Token consumption and agent enrollment (lab.store.enrollment) both use it."""


class Tokens:
    def __init__(self, db: Runner) -> None:
        self._db = db

    async def create(self, token: JoinToken) -> JoinToken:
        def op(tx: Tx) -> JoinToken:
            try:
                tx.run(
                    f"INSERT INTO join_tokens ({JOIN_TOKENS_COLS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    tx.dialect.codec.token_params(token),
                )
            except tx.dialect.unique_violation as exc:
                raise Conflict(f"token {token.id!r} already exists") from exc
            return _token_of(tx, token.id)

        return await self._db.write(op)

    async def get(self, token_id: str) -> JoinToken:
        return await self._db.read(_token_of, token_id)

    async def list(self) -> list[JoinToken]:
        def op(tx: Tx) -> list[JoinToken]:
            rows = tx.all(f"SELECT {JOIN_TOKENS_COLS} FROM join_tokens ORDER BY created_at, id")
            return [tx.dialect.codec.token(r) for r in rows]

        return await self._db.read(op)

    async def revoke(self, token_id: str, *, at: datetime) -> JoinToken:
        """Revoke (idempotent: the first revocation time is kept)."""

        def op(tx: Tx) -> JoinToken:
            _token_of(tx, token_id)
            tx.run(
                "UPDATE join_tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
                (tx.dialect.codec.time(at), token_id),
            )
            return _token_of(tx, token_id)

        return await self._db.write(op)

    async def consume(self, token_id: str, *, at: datetime) -> JoinToken:
        def op(tx: Tx) -> JoinToken:
            row = tx.one(CONSUME_TOKEN, (token_id, tx.dialect.codec.time(at)))
            if row is None:
                # Read in the same transaction, for the message only.
                raise token_refusal(find_token(tx, token_id), at)
            return before_use(tx.dialect.codec.token(row))

        return await self._db.write(op)


# --- certificates ---------------------------------------------------------------------------


def _cert_of(tx: Tx, serial: str) -> Certificate:
    row = tx.one(f"SELECT {CERT_COLS} FROM certificates WHERE serial = ?", (serial,))
    if row is None:
        raise not_found("certificate", serial, resource="cert")
    return tx.dialect.codec.cert(row)


class Certificates:
    def __init__(self, db: Runner) -> None:
        self._db = db

    async def record(self, cert: Certificate) -> Certificate:
        def op(tx: Tx) -> Certificate:
            try:
                tx.run(
                    f"INSERT INTO certificates ({CERT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    tx.dialect.codec.cert_params(cert),
                )
            except tx.dialect.unique_violation as exc:
                raise Conflict(f"certificate {cert.serial!r} is already recorded") from exc
            return _cert_of(tx, cert.serial)

        return await self._db.write(op)

    async def get(self, serial: str) -> Certificate:
        return await self._db.read(_cert_of, serial)

    async def list(self, *, subject: str | None = None) -> list[Certificate]:
        def op(tx: Tx) -> list[Certificate]:
            if subject is None:
                rows = tx.all(f"SELECT {CERT_COLS} FROM certificates ORDER BY not_before, serial")
            else:
                rows = tx.all(
                    f"SELECT {CERT_COLS} FROM certificates WHERE subject = ?"
                    " ORDER BY not_before, serial",
                    (subject,),
                )
            return [tx.dialect.codec.cert(r) for r in rows]

        return await self._db.read(op)

    async def revoke(self, serial: str, *, at: datetime) -> Certificate:
        """Revoke (idempotent: the first revocation time is kept)."""

        def op(tx: Tx) -> Certificate:
            _cert_of(tx, serial)
            tx.run(
                "UPDATE certificates SET revoked_at = coalesce(revoked_at, ?) WHERE serial = ?",
                (tx.dialect.codec.time(at), serial),
            )
            return _cert_of(tx, serial)

        return await self._db.write(op)

    async def revoked(self) -> builtins.list[Certificate]:
        def op(tx: Tx) -> builtins.list[Certificate]:
            rows = tx.all(
                f"SELECT {CERT_COLS} FROM certificates WHERE revoked_at IS NOT NULL"
                " ORDER BY revoked_at, serial"
            )
            return [tx.dialect.codec.cert(r) for r in rows]

        return await self._db.read(op)
