"""Migrations and seed for PostgreSQL / CockroachDB.

Several labd replicas may start at once against one database. Without advisory locks (which
CockroachDB lacks) the migration transaction itself is the lock: each migration runs in one
SERIALIZABLE transaction that first checks ``schema_migrations``; a replica that loses the race
fails on the duplicate table or a serialization conflict, retries, and then finds it recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg.errors

from lab.store.migrate import Migration, pending, schema_files, split_statements
from lab.store.postgres.db import POSTGRES, Conn, Database, RetryTransaction
from lab.store.seed import BUILTIN_ROLES
from lab.store.sql.dialect import Tx
from lab.store.sql.identity import seed_roles


def applied_versions(conn: Conn) -> set[int]:
    row = conn.execute(
        "SELECT count(*) FROM information_schema.tables"
        " WHERE table_schema = current_schema() AND table_name = 'schema_migrations'"
    ).fetchone()
    if row is None or row[0] == 0:
        return set()
    return {int(v) for (v,) in conn.execute("SELECT version FROM schema_migrations").fetchall()}


def _create_table(conn: Conn) -> None:
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INT8 PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
        )
    except (
        psycopg.errors.UniqueViolation,
        psycopg.errors.DuplicateTable,
        psycopg.errors.DuplicateObject,  # 'type "schema_migrations" already exists'
    ) as exc:
        # PostgreSQL's IF NOT EXISTS is not race-free between two sessions.
        raise RetryTransaction(str(exc)) from exc


def _apply(conn: Conn, migration: Migration) -> bool:
    if conn.execute(
        "SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,)
    ).fetchone():
        return False
    try:
        for statement in split_statements(migration.sql):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
            (migration.version, migration.name, datetime.now(UTC)),
        )
    except (
        psycopg.errors.DuplicateTable,
        psycopg.errors.DuplicateObject,
        psycopg.errors.DuplicateColumn,  # ALTER TABLE ... ADD COLUMN raced by another replica
        psycopg.errors.UniqueViolation,  # PostgreSQL's catalog race: pg_type, pg_class
    ) as exc:
        # Another replica is applying the same migration; its record will be there next time.
        raise RetryTransaction(str(exc)) from exc
    return True


async def migrate(db: Database, migrations: list[Migration] | None = None) -> list[int]:
    """Apply pending migrations, each in its own transaction; return the versions applied.

    Raises ``SchemaTooNew`` (before writing anything) for a database from a newer labctl.
    """
    known = schema_files("postgres") if migrations is None else migrations
    todo = pending(await db.read(applied_versions), known)
    if not todo:
        return []
    await db.run_schema_change(_create_table)
    done: list[int] = []
    for migration in todo:
        if await db.run_schema_change(_apply, migration):
            done.append(migration.version)
    return done


def _seed(conn: Conn) -> None:
    seed_roles(Tx(conn, POSTGRES), BUILTIN_ROLES)


async def seed(db: Database) -> None:
    """Upsert the builtin roles (every open, so changed definitions reach old databases)."""
    await db.run(_seed)


async def schema_version(db: Database) -> int:
    def op(conn: Conn) -> int:
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        return int(row[0]) if row else 0

    return await db.read(op)
