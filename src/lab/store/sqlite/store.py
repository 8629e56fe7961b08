"""The SQLite Store: open, migrate, seed, run the group-commit writer, close."""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from lab.model import AuditEntry
from lab.store.auditchain import AuditKey
from lab.store.groupcommit import running
from lab.store.seed import BUILTIN_ROLES
from lab.store.sql.dialect import Tx
from lab.store.sql.identity import seed_roles
from lab.store.sql.repositories import SqlRepositories
from lab.store.sqlite.db import (
    BUSY_TIMEOUT_MS,
    SQLITE,
    Database,
    LabConnection,
    connect,
    migrate,
    path_from_url,
    sqlite_runner,
    transaction,
)
from lab.store.sqlite.writes import ChainHead, append_in_transaction, flush_batch
from lab.store.writeops import CLOSE_DRAIN_SECONDS, Outcome, WriteOp


def _append_now(conn: sqlite3.Connection, entry: AuditEntry, *, head: ChainHead) -> AuditEntry:
    return append_in_transaction(conn, head, entry)


def seed(conn: sqlite3.Connection) -> None:
    """Upsert the builtin roles (every open, so changed definitions reach old databases)."""
    with transaction(conn):
        seed_roles(Tx(conn, SQLITE), BUILTIN_ROLES)


def _open(url: str, busy_timeout: float) -> Database:
    path = path_from_url(url)
    conn = connect(path, busy_timeout=busy_timeout)
    try:
        migrate(conn)
        seed(conn)
    except BaseException:
        conn.close()
        raise
    return Database(conn, path)


class SqliteStore(SqlRepositories):
    """The :class:`lab.store.base.Store` of one SQLite file; get one from :func:`open_sqlite`."""

    def __init__(
        self,
        url: str,
        db: Database,
        *,
        max_batch: int = 1000,
        audit_key: AuditKey | None = None,
    ) -> None:
        self._db = db
        self._head = ChainHead(key=audit_key)
        if isinstance(db.conn, LabConnection) and audit_key is not None:
            # A change made on behalf of an audited request commits with its entry.
            db.conn.audit_append = functools.partial(_append_now, head=self._head)
            db.conn.audit_rolled_back = self._head.forget
        super().__init__(
            url, sqlite_runner(db), self._flush, max_batch=max_batch, audit_key=audit_key
        )

    @property
    def path(self) -> str:
        return str(self._db.path)

    async def _flush(self, ops: list[WriteOp]) -> list[Outcome | Exception]:
        # The one thread hop per batch.
        return await self._db.run(flush_batch, ops, self._head)

    async def schema_version(self) -> int:
        def op(conn: sqlite3.Connection) -> int:
            (version,) = conn.execute(
                "SELECT coalesce(max(version), 0) FROM schema_migrations"
            ).fetchone()
            return int(version)

        return await self._db.run(op)

    async def ping(self) -> float:
        started = time.perf_counter()
        await self._db.run(lambda conn: conn.execute("SELECT 1").fetchone())
        return time.perf_counter() - started

    async def pragmas(self) -> dict[str, object]:
        """The connection settings that matter for durability, for diagnostics."""

        def op(conn: sqlite3.Connection) -> dict[str, object]:
            names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            return {n: conn.execute(f"PRAGMA {n}").fetchone()[0] for n in names}

        return await self._db.run(op)


@asynccontextmanager
async def open_sqlite(
    url: str,
    *,
    max_batch: int = 1000,
    busy_timeout: float = BUSY_TIMEOUT_MS / 1000,
    audit_key: AuditKey | None = None,
) -> AsyncIterator[SqliteStore]:
    """Open, migrate and seed the SQLite database of ``url``; close it on exit.

    ``busy_timeout`` (seconds) is how long a statement waits for another process's lock.
    ``audit_key`` MACs the audit chain (``store.audit.start_chain()`` checks it against the
    database); without it audit appends fail ``Unavailable``.

    The group-commit writer runs in this context's own nursery. On exit, queued writes get
    ``CLOSE_DRAIN_SECONDS`` to commit, then the writer is cancelled (its producers get
    ``Unavailable``) and the connection is closed.

    Raises ``Unavailable`` naming the path when the file or its directory cannot be created or
    written, ``SchemaTooNew`` when a newer labctl wrote it (the file is left untouched),
    ``ConfigError`` for a malformed URL.
    """
    db = await trio.to_thread.run_sync(_open, url, busy_timeout)
    try:
        store = SqliteStore(url, db, max_batch=max_batch, audit_key=audit_key)
        async with running(store.writer, drain_seconds=CLOSE_DRAIN_SECONDS):
            yield store
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(db.close, limiter=db.limiter)
