"""The repository of the labd replica registry and the cluster change counter."""

# ruff: noqa: S608 -- SQL is assembled only from a constant column list, never from input.

from __future__ import annotations

import builtins
from datetime import datetime

from lab.model import Replica
from lab.store.rows import CHANGES_KEY, REPLICA_COLS
from lab.store.rules import not_found
from lab.store.sql.dialect import Runner, Tx


def _replica_of(tx: Tx, replica_id: str) -> Replica:
    row = tx.one(f"SELECT {REPLICA_COLS} FROM replicas WHERE id = ?", (replica_id,))
    if row is None:
        raise not_found("replica", replica_id)
    return tx.dialect.codec.replica(row)


class Replicas:
    def __init__(self, db: Runner) -> None:
        self._db = db

    async def register(self, replica: Replica) -> Replica:
        def op(tx: Tx) -> Replica:
            tx.run(
                f"INSERT INTO replicas ({REPLICA_COLS}) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET url = excluded.url,"
                " started_at = excluded.started_at, seen = excluded.seen,"
                " lease_until = excluded.lease_until",
                tx.dialect.codec.replica_params(replica),
            )
            return _replica_of(tx, replica.id)

        return await self._db.write(op)

    async def get(self, replica_id: str) -> Replica:
        return await self._db.read(_replica_of, replica_id)

    async def list(self, *, alive_at: datetime | None = None) -> builtins.list[Replica]:
        def op(tx: Tx) -> builtins.list[Replica]:
            if alive_at is None:
                rows = tx.all(f"SELECT {REPLICA_COLS} FROM replicas ORDER BY id")
            else:
                rows = tx.all(
                    f"SELECT {REPLICA_COLS} FROM replicas WHERE lease_until > ? ORDER BY id",
                    (tx.dialect.codec.time(alive_at),),
                )
            return [tx.dialect.codec.replica(r) for r in rows]

        return await self._db.read(op)

    async def remove(self, replica_id: str) -> None:
        def op(tx: Tx) -> None:
            tx.run("DELETE FROM replicas WHERE id = ?", (replica_id,))

        await self._db.write(op)

    async def holders(self, *, at: datetime) -> dict[str, str]:
        def op(tx: Tx) -> dict[str, str]:
            rows = tx.all(
                "SELECT s.name, l.replica FROM agent_leases l JOIN servers s ON s.id = l.server_id"
                " WHERE l.lease_until > ?",
                (tx.dialect.codec.time(at),),
            )
            return {r[0]: r[1] for r in rows}

        return await self._db.read(op)

    async def bump_changes(self) -> int:
        def op(tx: Tx) -> int:
            # One row, read-modify-write in one statement: concurrent bumps on other PostgreSQL
            # replicas conflict (40001) and the whole transaction is retried, so no bump is
            # lost. INT8 is a 64-bit integer in both (SQLite gives any type naming INT integer
            # affinity).
            row = tx.one(
                "INSERT INTO settings (key, value) VALUES (?, '1') ON CONFLICT (key)"
                " DO UPDATE SET value = CAST(CAST(settings.value AS INT8) + 1 AS TEXT)"
                " RETURNING value",
                (CHANGES_KEY,),
            )
            assert row is not None
            return int(row[0])

        return await self._db.write(op)

    async def changes(self) -> int:
        def op(tx: Tx) -> int:
            found = tx.one("SELECT value FROM settings WHERE key = ?", (CHANGES_KEY,))
            return 0 if found is None else int(found[0])

        return await self._db.read(op)
