"""SQLite repository of the labd replica registry and the cluster change counter."""

# ruff: noqa: S608 -- SQL is assembled only from a constant column list, never from input.

from __future__ import annotations

import builtins
import sqlite3
from datetime import datetime

from lab.model import Replica
from lab.store.rows import CHANGES_KEY, REPLICA_COLS
from lab.store.rules import not_found
from lab.store.sqlite.db import CODEC, Database, transaction, ts


def _replica_of(conn: sqlite3.Connection, replica_id: str) -> Replica:
    row = conn.execute(
        f"SELECT {REPLICA_COLS} FROM replicas WHERE id = ?", (replica_id,)
    ).fetchone()
    if row is None:
        raise not_found("replica", replica_id)
    return CODEC.replica(row)


class SqliteReplicas:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def register(self, replica: Replica) -> Replica:
        def op(conn: sqlite3.Connection) -> Replica:
            with transaction(conn):
                conn.execute(
                    f"INSERT INTO replicas ({REPLICA_COLS}) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET url = excluded.url,"
                    " started_at = excluded.started_at, seen = excluded.seen,"
                    " lease_until = excluded.lease_until",
                    CODEC.replica_params(replica),
                )
                return _replica_of(conn, replica.id)

        return await self._db.run(op)

    async def get(self, replica_id: str) -> Replica:
        return await self._db.run(_replica_of, replica_id)

    async def list(self, *, alive_at: datetime | None = None) -> builtins.list[Replica]:
        def op(conn: sqlite3.Connection) -> builtins.list[Replica]:
            if alive_at is None:
                rows = conn.execute(f"SELECT {REPLICA_COLS} FROM replicas ORDER BY id")
            else:
                rows = conn.execute(
                    f"SELECT {REPLICA_COLS} FROM replicas WHERE lease_until > ? ORDER BY id",
                    (ts(alive_at),),
                )
            return [CODEC.replica(r) for r in rows.fetchall()]

        return await self._db.run(op)

    async def remove(self, replica_id: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute("DELETE FROM replicas WHERE id = ?", (replica_id,))

        await self._db.run(op)

    async def holders(self, *, at: datetime) -> dict[str, str]:
        def op(conn: sqlite3.Connection) -> dict[str, str]:
            rows = conn.execute(
                "SELECT s.name, l.replica FROM agent_leases l JOIN servers s ON s.id = l.server_id"
                " WHERE l.lease_until > ?",
                (ts(at),),
            )
            return {r[0]: r[1] for r in rows.fetchall()}

        return await self._db.run(op)

    async def bump_changes(self) -> int:
        def op(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                conn.execute(
                    "INSERT INTO settings (key, value) VALUES (?, '1') ON CONFLICT (key)"
                    " DO UPDATE SET value = CAST(CAST(settings.value AS INTEGER) + 1 AS TEXT)",
                    (CHANGES_KEY,),
                )
                (value,) = conn.execute(
                    "SELECT value FROM settings WHERE key = ?", (CHANGES_KEY,)
                ).fetchone()
            return int(value)

        return await self._db.run(op)

    async def changes(self) -> int:
        def op(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (CHANGES_KEY,))
            found = row.fetchone()
            return 0 if found is None else int(found[0])

        return await self._db.run(op)
