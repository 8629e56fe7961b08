"""PostgreSQL repository of the labd replica registry and the cluster change counter."""

# ruff: noqa: S608 -- SQL is assembled only from a constant column list, never from input.

from __future__ import annotations

import builtins
from datetime import datetime

from lab.model import Replica
from lab.store.postgres.db import CODEC, Conn, Database
from lab.store.rows import CHANGES_KEY, REPLICA_COLS
from lab.store.rules import not_found


def _replica_of(conn: Conn, replica_id: str) -> Replica:
    row = conn.execute(
        f"SELECT {REPLICA_COLS} FROM replicas WHERE id = %s", (replica_id,)
    ).fetchone()
    if row is None:
        raise not_found("replica", replica_id)
    return CODEC.replica(row)


class PgReplicas:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def register(self, replica: Replica) -> Replica:
        def op(conn: Conn) -> Replica:
            conn.execute(
                f"INSERT INTO replicas ({REPLICA_COLS}) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET url = excluded.url,"
                " started_at = excluded.started_at, seen = excluded.seen,"
                " lease_until = excluded.lease_until",
                CODEC.replica_params(replica),
            )
            return _replica_of(conn, replica.id)

        return await self._db.run(op)

    async def get(self, replica_id: str) -> Replica:
        return await self._db.read(_replica_of, replica_id)

    async def list(self, *, alive_at: datetime | None = None) -> builtins.list[Replica]:
        def op(conn: Conn) -> builtins.list[Replica]:
            if alive_at is None:
                rows = conn.execute(f"SELECT {REPLICA_COLS} FROM replicas ORDER BY id")
            else:
                rows = conn.execute(
                    f"SELECT {REPLICA_COLS} FROM replicas WHERE lease_until > %s ORDER BY id",
                    (alive_at,),
                )
            return [CODEC.replica(r) for r in rows.fetchall()]

        return await self._db.read(op)

    async def remove(self, replica_id: str) -> None:
        def op(conn: Conn) -> None:
            conn.execute("DELETE FROM replicas WHERE id = %s", (replica_id,))

        await self._db.run(op)

    async def holders(self, *, at: datetime) -> dict[str, str]:
        def op(conn: Conn) -> dict[str, str]:
            rows = conn.execute(
                "SELECT s.name, l.replica FROM agent_leases l JOIN servers s ON s.id = l.server_id"
                " WHERE l.lease_until > %s",
                (at,),
            )
            return {r[0]: r[1] for r in rows.fetchall()}

        return await self._db.read(op)

    async def bump_changes(self) -> int:
        def op(conn: Conn) -> int:
            # One row, read-modify-write in one statement: concurrent bumps on other replicas
            # conflict (40001) and the whole transaction is retried, so no bump is lost.
            row = conn.execute(
                "INSERT INTO settings (key, value) VALUES (%s, '1') ON CONFLICT (key)"
                " DO UPDATE SET value = CAST(CAST(settings.value AS INT8) + 1 AS TEXT)"
                " RETURNING value",
                (CHANGES_KEY,),
            ).fetchone()
            assert row is not None
            return int(row[0])

        return await self._db.run(op)

    async def changes(self) -> int:
        def op(conn: Conn) -> int:
            row = conn.execute("SELECT value FROM settings WHERE key = %s", (CHANGES_KEY,))
            found = row.fetchone()
            return 0 if found is None else int(found[0])

        return await self._db.read(op)
