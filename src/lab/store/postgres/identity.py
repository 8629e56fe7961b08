"""PostgreSQL repositories of identity: users, roles and their permissions, join tokens,
certificates. Each method body is one transaction function (see ``Database.run``)."""

# ruff: noqa: S608 -- SQL is assembled only from constant column lists, never from input.

from __future__ import annotations

import builtins
from collections.abc import Iterable
from datetime import datetime

import psycopg.errors

from lab.errors import Conflict
from lab.model import Certificate, JoinToken, Permission, Role, User
from lab.store.postgres.db import CODEC, Conn, Database
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

# --- users ----------------------------------------------------------------------------------


def _user_where(conn: Conn, column: str, key: str) -> User:
    row = conn.execute(f"SELECT {USER_COLS} FROM users WHERE {column} = %s", (key,)).fetchone()
    if row is None:
        raise not_found("user", key)
    return CODEC.user(row)


class PgUsers:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, user: User) -> User:
        def op(conn: Conn) -> User:
            try:
                conn.execute(
                    f"INSERT INTO users ({USER_COLS}) VALUES (%s, %s, %s, %s)",
                    CODEC.user_params(user),
                )
            except psycopg.errors.UniqueViolation as exc:
                raise already_exists("user", user.name) from exc
            return _user_where(conn, "id", user.id)

        return await self._db.run(op)

    async def get(self, user_id: str) -> User:
        return await self._db.read(_user_where, "id", user_id)

    async def get_by_name(self, name: str) -> User:
        return await self._db.read(_user_where, "name", name)

    async def list(self) -> list[User]:
        def op(conn: Conn) -> list[User]:
            rows = conn.execute(f"SELECT {USER_COLS} FROM users ORDER BY name")
            return [CODEC.user(r) for r in rows.fetchall()]

        return await self._db.read(op)

    async def set_disabled(self, name: str, disabled: bool) -> User:
        def op(conn: Conn) -> User:
            cur = conn.execute("UPDATE users SET disabled = %s WHERE name = %s", (disabled, name))
            if cur.rowcount == 0:
                raise not_found("user", name)
            return _user_where(conn, "name", name)

        return await self._db.run(op)

    async def grant(self, user_id: str, role: str) -> None:
        def op(conn: Conn) -> None:
            _user_where(conn, "id", user_id)
            _role_of(conn, role)
            conn.execute(
                "INSERT INTO user_roles (user_id, role) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (user_id, role),
            )

        await self._db.run(op)

    async def revoke(self, user_id: str, role: str) -> None:
        """Take a role away; taking away a role the user does not hold is not an error."""

        def op(conn: Conn) -> None:
            _user_where(conn, "id", user_id)
            conn.execute("DELETE FROM user_roles WHERE user_id = %s AND role = %s", (user_id, role))

        await self._db.run(op)

    async def roles_of(self, user_id: str) -> builtins.list[str]:
        def op(conn: Conn) -> builtins.list[str]:
            _user_where(conn, "id", user_id)
            rows = conn.execute(
                "SELECT role FROM user_roles WHERE user_id = %s ORDER BY role", (user_id,)
            )
            return [r[0] for r in rows.fetchall()]

        return await self._db.read(op)


# --- roles ----------------------------------------------------------------------------------


def _role_of(conn: Conn, name: str) -> Role:
    row = conn.execute(f"SELECT {ROLE_COLS} FROM roles WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise not_found("role", name)
    perms = conn.execute(
        f"SELECT {PERMISSION_COLS} FROM role_permissions WHERE role = %s ORDER BY position",
        (name,),
    ).fetchall()
    return CODEC.role(row, perms)


def _all_roles(conn: Conn) -> list[Role]:
    # Two queries for the whole list, not one per role.
    perms: dict[str, list[tuple[object, ...]]] = {}
    for row in conn.execute(
        f"SELECT role, {PERMISSION_COLS} FROM role_permissions ORDER BY role, position"
    ).fetchall():
        perms.setdefault(row[0], []).append(row[1:])
    rows = conn.execute(f"SELECT {ROLE_COLS} FROM roles ORDER BY name").fetchall()
    return [CODEC.role(row, perms.get(row[0], ())) for row in rows]


def _write_permissions(
    conn: Conn, role: str, permissions: Iterable[Permission], start: int
) -> None:
    params = permission_params(role, permissions, start)
    if params:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO role_permissions (role, effect, action, resource, position)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                params,
            )


def upsert_role(conn: Conn, role: Role) -> None:
    """Create or replace ``role`` with exactly its permissions, inside the caller's transaction."""
    conn.execute(
        f"INSERT INTO roles ({ROLE_COLS}) VALUES (%s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET"
        " description = excluded.description, builtin = excluded.builtin",
        CODEC.role_params(role),
    )
    conn.execute("DELETE FROM role_permissions WHERE role = %s", (role.name,))
    _write_permissions(conn, role.name, role.permissions, 0)


class PgRoles:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def upsert(self, role: Role) -> Role:
        def op(conn: Conn) -> Role:
            upsert_role(conn, role)
            return _role_of(conn, role.name)

        return await self._db.run(op)

    async def get(self, name: str) -> Role:
        return await self._db.read(_role_of, name)

    async def list(self) -> list[Role]:
        return await self._db.read(_all_roles)

    async def delete(self, name: str) -> None:
        def op(conn: Conn) -> None:
            role = _role_of(conn, name)
            row = conn.execute("SELECT count(*) FROM user_roles WHERE role = %s", (name,))
            check_role_deletable(role, int(row.fetchone()[0]))  # type: ignore[index]
            conn.execute("DELETE FROM roles WHERE name = %s", (name,))

        await self._db.run(op)

    async def add_permission(self, name: str, permission: Permission) -> Role:
        """Append a rule (a rule the role already has is left where it is)."""

        def op(conn: Conn) -> Role:
            _role_of(conn, name)
            row = conn.execute(
                "SELECT coalesce(max(position), -1) FROM role_permissions WHERE role = %s",
                (name,),
            ).fetchone()
            _write_permissions(conn, name, [permission], int(row[0]) + 1)  # type: ignore[index]
            return _role_of(conn, name)

        return await self._db.run(op)

    async def remove_permission(self, name: str, permission: Permission) -> Role:
        def op(conn: Conn) -> Role:
            _role_of(conn, name)
            conn.execute(
                "DELETE FROM role_permissions"
                " WHERE role = %s AND effect = %s AND action = %s AND resource = %s",
                (name, permission.effect.value, permission.action, permission.resource),
            )
            return _role_of(conn, name)

        return await self._db.run(op)


# --- join tokens ----------------------------------------------------------------------------


def _find_token(conn: Conn, token_id: str) -> JoinToken | None:
    row = conn.execute(
        f"SELECT {JOIN_TOKENS_COLS} FROM join_tokens WHERE id = %s", (token_id,)
    ).fetchone()
    return None if row is None else CODEC.token(row)


def _token_of(conn: Conn, token_id: str) -> JoinToken:
    token = _find_token(conn, token_id)
    if token is None:
        raise not_found("token", token_id)
    return token


class PgTokens:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, token: JoinToken) -> JoinToken:
        def op(conn: Conn) -> JoinToken:
            try:
                conn.execute(
                    f"INSERT INTO join_tokens ({JOIN_TOKENS_COLS})"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    CODEC.token_params(token),
                )
            except psycopg.errors.UniqueViolation as exc:
                raise Conflict(f"token {token.id!r} already exists") from exc
            return _token_of(conn, token.id)

        return await self._db.run(op)

    async def get(self, token_id: str) -> JoinToken:
        return await self._db.read(_token_of, token_id)

    async def list(self) -> list[JoinToken]:
        def op(conn: Conn) -> list[JoinToken]:
            rows = conn.execute(
                f"SELECT {JOIN_TOKENS_COLS} FROM join_tokens ORDER BY created_at, id"
            )
            return [CODEC.token(r) for r in rows.fetchall()]

        return await self._db.read(op)

    async def revoke(self, token_id: str, *, at: datetime) -> JoinToken:
        """Revoke (idempotent: the first revocation time is kept)."""

        def op(conn: Conn) -> JoinToken:
            _token_of(conn, token_id)
            conn.execute(
                "UPDATE join_tokens SET revoked_at = coalesce(revoked_at, %s) WHERE id = %s",
                (at, token_id),
            )
            return _token_of(conn, token_id)

        return await self._db.run(op)

    async def consume(self, token_id: str, *, at: datetime) -> JoinToken:
        def op(conn: Conn) -> JoinToken:
            # One conditional UPDATE is the whole decision. Two replicas racing for a one-time
            # token: SERIALIZABLE makes the loser fail with 40001, and its retry sees uses = 1.
            row = conn.execute(
                f"UPDATE join_tokens SET uses = uses + 1"
                " WHERE id = %s AND revoked_at IS NULL AND expires_at > %s AND ("
                "  (reusable AND (max_uses IS NULL OR uses < max_uses))"
                "  OR (NOT reusable AND uses = 0))"
                f" RETURNING {JOIN_TOKENS_COLS}",
                (token_id, at),
            ).fetchone()
            if row is None:
                # Read in the same transaction, for the message only.
                raise token_refusal(_find_token(conn, token_id), at)
            return before_use(CODEC.token(row))

        return await self._db.run(op)


# --- certificates ---------------------------------------------------------------------------


def _cert_of(conn: Conn, serial: str) -> Certificate:
    row = conn.execute(
        f"SELECT {CERT_COLS} FROM certificates WHERE serial = %s", (serial,)
    ).fetchone()
    if row is None:
        raise not_found("certificate", serial, resource="cert")
    return CODEC.cert(row)


class PgCertificates:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, cert: Certificate) -> Certificate:
        def op(conn: Conn) -> Certificate:
            try:
                conn.execute(
                    f"INSERT INTO certificates ({CERT_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    CODEC.cert_params(cert),
                )
            except psycopg.errors.UniqueViolation as exc:
                raise Conflict(f"certificate {cert.serial!r} is already recorded") from exc
            return _cert_of(conn, cert.serial)

        return await self._db.run(op)

    async def get(self, serial: str) -> Certificate:
        return await self._db.read(_cert_of, serial)

    async def list(self, *, subject: str | None = None) -> list[Certificate]:
        def op(conn: Conn) -> list[Certificate]:
            if subject is None:
                rows = conn.execute(
                    f"SELECT {CERT_COLS} FROM certificates ORDER BY not_before, serial"
                )
            else:
                rows = conn.execute(
                    f"SELECT {CERT_COLS} FROM certificates WHERE subject = %s"
                    " ORDER BY not_before, serial",
                    (subject,),
                )
            return [CODEC.cert(r) for r in rows.fetchall()]

        return await self._db.read(op)

    async def revoke(self, serial: str, *, at: datetime) -> Certificate:
        """Revoke (idempotent: the first revocation time is kept)."""

        def op(conn: Conn) -> Certificate:
            _cert_of(conn, serial)
            conn.execute(
                "UPDATE certificates SET revoked_at = coalesce(revoked_at, %s) WHERE serial = %s",
                (at, serial),
            )
            return _cert_of(conn, serial)

        return await self._db.run(op)

    async def revoked(self) -> builtins.list[Certificate]:
        def op(conn: Conn) -> builtins.list[Certificate]:
            rows = conn.execute(
                f"SELECT {CERT_COLS} FROM certificates WHERE revoked_at IS NOT NULL"
                " ORDER BY revoked_at, serial"
            )
            return [CODEC.cert(r) for r in rows.fetchall()]

        return await self._db.read(op)
