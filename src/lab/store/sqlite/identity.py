"""SQLite repositories of identity: users, roles and their permissions, join tokens,
certificates."""

# ruff: noqa: S608 -- SQL is assembled only from constant column lists, never from input.

from __future__ import annotations

import builtins
import sqlite3
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
from lab.store.sqlite.db import CODEC, Database, transaction, ts

# --- users ----------------------------------------------------------------------------------


def _user_where(conn: sqlite3.Connection, column: str, key: str) -> User:
    row = conn.execute(f"SELECT {USER_COLS} FROM users WHERE {column} = ?", (key,)).fetchone()
    if row is None:
        raise not_found("user", key)
    return CODEC.user(row)


class SqliteUsers:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, user: User) -> User:
        def op(conn: sqlite3.Connection) -> User:
            try:
                with transaction(conn):
                    conn.execute(
                        f"INSERT INTO users ({USER_COLS}) VALUES (?, ?, ?, ?)",
                        CODEC.user_params(user),
                    )
            except sqlite3.IntegrityError as exc:
                raise already_exists("user", user.name) from exc
            return _user_where(conn, "id", user.id)

        return await self._db.run(op)

    async def get(self, user_id: str) -> User:
        return await self._db.run(_user_where, "id", user_id)

    async def get_by_name(self, name: str) -> User:
        return await self._db.run(_user_where, "name", name)

    async def list(self) -> list[User]:
        def op(conn: sqlite3.Connection) -> list[User]:
            rows = conn.execute(f"SELECT {USER_COLS} FROM users ORDER BY name")
            return [CODEC.user(r) for r in rows.fetchall()]

        return await self._db.run(op)

    async def set_disabled(self, name: str, disabled: bool) -> User:
        def op(conn: sqlite3.Connection) -> User:
            with transaction(conn):
                cur = conn.execute(
                    "UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name)
                )
                if cur.rowcount == 0:
                    raise not_found("user", name)
            return _user_where(conn, "name", name)

        return await self._db.run(op)

    async def grant(self, user_id: str, role: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                _user_where(conn, "id", user_id)
                _role_of(conn, role)
                conn.execute(
                    "INSERT INTO user_roles (user_id, role) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (user_id, role),
                )

        await self._db.run(op)

    async def revoke(self, user_id: str, role: str) -> None:
        """Take a role away; taking away a role the user does not hold is not an error."""

        def op(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                _user_where(conn, "id", user_id)
                conn.execute(
                    "DELETE FROM user_roles WHERE user_id = ? AND role = ?", (user_id, role)
                )

        await self._db.run(op)

    async def roles_of(self, user_id: str) -> builtins.list[str]:
        def op(conn: sqlite3.Connection) -> builtins.list[str]:
            _user_where(conn, "id", user_id)
            rows = conn.execute(
                "SELECT role FROM user_roles WHERE user_id = ? ORDER BY role", (user_id,)
            )
            return [r[0] for r in rows.fetchall()]

        return await self._db.run(op)


# --- roles ----------------------------------------------------------------------------------


def _role_of(conn: sqlite3.Connection, name: str) -> Role:
    row = conn.execute(f"SELECT {ROLE_COLS} FROM roles WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise not_found("role", name)
    perms = conn.execute(
        f"SELECT {PERMISSION_COLS} FROM role_permissions WHERE role = ? ORDER BY position",
        (name,),
    ).fetchall()
    return CODEC.role(row, perms)


def _write_permissions(
    conn: sqlite3.Connection, role: str, permissions: Iterable[Permission], start: int
) -> None:
    conn.executemany(
        "INSERT INTO role_permissions (role, effect, action, resource, position)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        permission_params(role, permissions, start),
    )


def upsert_role(conn: sqlite3.Connection, role: Role) -> None:
    """Create or replace ``role`` with exactly its permissions; caller holds a transaction."""
    conn.execute(
        f"INSERT INTO roles ({ROLE_COLS}) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET"
        " description = excluded.description, builtin = excluded.builtin",
        CODEC.role_params(role),
    )
    conn.execute("DELETE FROM role_permissions WHERE role = ?", (role.name,))
    _write_permissions(conn, role.name, role.permissions, 0)


class SqliteRoles:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def upsert(self, role: Role) -> Role:
        def op(conn: sqlite3.Connection) -> Role:
            with transaction(conn):
                upsert_role(conn, role)
            return _role_of(conn, role.name)

        return await self._db.run(op)

    async def get(self, name: str) -> Role:
        return await self._db.run(_role_of, name)

    async def list(self) -> list[Role]:
        def op(conn: sqlite3.Connection) -> list[Role]:
            names = conn.execute("SELECT name FROM roles ORDER BY name").fetchall()
            return [_role_of(conn, n) for (n,) in names]

        return await self._db.run(op)

    async def delete(self, name: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                role = _role_of(conn, name)
                (holders,) = conn.execute(
                    "SELECT count(*) FROM user_roles WHERE role = ?", (name,)
                ).fetchone()
                check_role_deletable(role, int(holders))
                conn.execute("DELETE FROM roles WHERE name = ?", (name,))

        await self._db.run(op)

    async def add_permission(self, name: str, permission: Permission) -> Role:
        """Append a rule (a rule the role already has is left where it is)."""

        def op(conn: sqlite3.Connection) -> Role:
            with transaction(conn):
                _role_of(conn, name)
                (last,) = conn.execute(
                    "SELECT coalesce(max(position), -1) FROM role_permissions WHERE role = ?",
                    (name,),
                ).fetchone()
                _write_permissions(conn, name, [permission], last + 1)
            return _role_of(conn, name)

        return await self._db.run(op)

    async def remove_permission(self, name: str, permission: Permission) -> Role:
        def op(conn: sqlite3.Connection) -> Role:
            with transaction(conn):
                _role_of(conn, name)
                conn.execute(
                    "DELETE FROM role_permissions"
                    " WHERE role = ? AND effect = ? AND action = ? AND resource = ?",
                    (name, permission.effect.value, permission.action, permission.resource),
                )
            return _role_of(conn, name)

        return await self._db.run(op)


# --- join tokens ----------------------------------------------------------------------------


def _find_token(conn: sqlite3.Connection, token_id: str) -> JoinToken | None:
    row = conn.execute(
        f"SELECT {JOIN_TOKENS_COLS} FROM join_tokens WHERE id = ?", (token_id,)
    ).fetchone()
    return None if row is None else CODEC.token(row)


def _token_of(conn: sqlite3.Connection, token_id: str) -> JoinToken:
    token = _find_token(conn, token_id)
    if token is None:
        raise not_found("token", token_id)
    return token


class SqliteTokens:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, token: JoinToken) -> JoinToken:
        def op(conn: sqlite3.Connection) -> JoinToken:
            try:
                with transaction(conn):
                    conn.execute(
                        f"INSERT INTO join_tokens ({JOIN_TOKENS_COLS})"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        CODEC.token_params(token),
                    )
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"token {token.id!r} already exists") from exc
            return _token_of(conn, token.id)

        return await self._db.run(op)

    async def get(self, token_id: str) -> JoinToken:
        return await self._db.run(_token_of, token_id)

    async def list(self) -> list[JoinToken]:
        def op(conn: sqlite3.Connection) -> list[JoinToken]:
            rows = conn.execute(
                f"SELECT {JOIN_TOKENS_COLS} FROM join_tokens ORDER BY created_at, id"
            )
            return [CODEC.token(r) for r in rows.fetchall()]

        return await self._db.run(op)

    async def revoke(self, token_id: str, *, at: datetime) -> JoinToken:
        """Revoke (idempotent: the first revocation time is kept)."""

        def op(conn: sqlite3.Connection) -> JoinToken:
            with transaction(conn):
                _token_of(conn, token_id)
                conn.execute(
                    "UPDATE join_tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
                    (ts(at), token_id),
                )
            return _token_of(conn, token_id)

        return await self._db.run(op)

    async def consume(self, token_id: str, *, at: datetime) -> JoinToken:
        def op(conn: sqlite3.Connection) -> JoinToken:
            # One conditional UPDATE is the whole decision, so two racing consumers (here, or
            # in another process on the same file) can never both win a one-time token.
            with transaction(conn):
                row = conn.execute(
                    f"UPDATE join_tokens SET uses = uses + 1"
                    " WHERE id = ? AND revoked_at IS NULL AND expires_at > ? AND ("
                    "  (reusable = 1 AND (max_uses IS NULL OR uses < max_uses))"
                    "  OR (reusable = 0 AND uses = 0))"
                    f" RETURNING {JOIN_TOKENS_COLS}",
                    (token_id, ts(at)),
                ).fetchone()
                if row is None:
                    # Read after the fact, for the message only.
                    raise token_refusal(_find_token(conn, token_id), at)
            return before_use(CODEC.token(row))

        return await self._db.run(op)


# --- certificates ---------------------------------------------------------------------------


def _cert_of(conn: sqlite3.Connection, serial: str) -> Certificate:
    row = conn.execute(
        f"SELECT {CERT_COLS} FROM certificates WHERE serial = ?", (serial,)
    ).fetchone()
    if row is None:
        raise not_found("certificate", serial, resource="cert")
    return CODEC.cert(row)


class SqliteCertificates:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, cert: Certificate) -> Certificate:
        def op(conn: sqlite3.Connection) -> Certificate:
            try:
                with transaction(conn):
                    conn.execute(
                        f"INSERT INTO certificates ({CERT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        CODEC.cert_params(cert),
                    )
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"certificate {cert.serial!r} is already recorded") from exc
            return _cert_of(conn, cert.serial)

        return await self._db.run(op)

    async def get(self, serial: str) -> Certificate:
        return await self._db.run(_cert_of, serial)

    async def list(self, *, subject: str | None = None) -> list[Certificate]:
        def op(conn: sqlite3.Connection) -> list[Certificate]:
            if subject is None:
                rows = conn.execute(f"SELECT {CERT_COLS} FROM certificates ORDER BY not_before")
            else:
                rows = conn.execute(
                    f"SELECT {CERT_COLS} FROM certificates WHERE subject = ? ORDER BY not_before",
                    (subject,),
                )
            return [CODEC.cert(r) for r in rows.fetchall()]

        return await self._db.run(op)

    async def revoke(self, serial: str, *, at: datetime) -> Certificate:
        """Revoke (idempotent: the first revocation time is kept)."""

        def op(conn: sqlite3.Connection) -> Certificate:
            with transaction(conn):
                _cert_of(conn, serial)
                conn.execute(
                    "UPDATE certificates SET revoked_at = coalesce(revoked_at, ?) WHERE serial = ?",
                    (ts(at), serial),
                )
            return _cert_of(conn, serial)

        return await self._db.run(op)

    async def revoked(self) -> builtins.list[Certificate]:
        def op(conn: sqlite3.Connection) -> builtins.list[Certificate]:
            rows = conn.execute(
                f"SELECT {CERT_COLS} FROM certificates WHERE revoked_at IS NOT NULL"
                " ORDER BY revoked_at, serial"
            )
            return [CODEC.cert(r) for r in rows.fetchall()]

        return await self._db.run(op)
