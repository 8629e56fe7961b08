"""The PostgreSQL / CockroachDB Store: open the pool, migrate, seed, run the group-commit writer,
close."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from lab.model import AuditEntry
from lab.store.auditchain import AuditKey
from lab.store.groupcommit import running
from lab.store.postgres import schema
from lab.store.postgres.db import Conn, Database, PgOptions, open_pool, pg_runner
from lab.store.postgres.writes import append_in_transaction, flush_batch
from lab.store.sql.repositories import SqlRepositories
from lab.store.writeops import CLOSE_DRAIN_SECONDS, Outcome, WriteOp


def _append_now(conn: Conn, entry: AuditEntry, *, key: AuditKey) -> AuditEntry:
    return append_in_transaction(conn, key, entry)


class PostgresStore(SqlRepositories):
    """The :class:`lab.store.base.Store` of one PostgreSQL/CockroachDB database; get one from
    :func:`open_postgres`. Several stores (labd replicas) may share one database."""

    def __init__(
        self,
        url: str,
        db: Database,
        *,
        max_batch: int = 1000,
        audit_key: AuditKey | None = None,
    ) -> None:
        self.db = db
        self.audit_key = audit_key
        if audit_key is not None:
            # A change made on behalf of an audited request commits with its entry.
            db.audit_append = functools.partial(_append_now, key=audit_key)
        super().__init__(url, pg_runner(db), self._flush, max_batch=max_batch, audit_key=audit_key)

    async def _flush(self, ops: list[WriteOp]) -> list[Outcome | Exception]:
        # One thread hop and one transaction per batch (retried whole on conflicts).
        return await self.db.run(flush_batch, ops, self.audit_key)

    async def schema_version(self) -> int:
        return await schema.schema_version(self.db)

    async def ping(self) -> float:
        def op(conn: Conn) -> None:
            conn.execute("SELECT 1").fetchone()

        started = time.perf_counter()
        await self.db.read(op)
        return time.perf_counter() - started


@asynccontextmanager
async def open_postgres(
    url: str,
    *,
    options: PgOptions | None = None,
    max_batch: int = 1000,
    audit_key: AuditKey | None = None,
) -> AsyncIterator[PostgresStore]:
    """Connect to the database of ``url``, migrate and seed it; close the pool on exit.

    ``cockroachdb://`` URLs are passed to libpq as ``postgresql://``. The group-commit writer
    runs in this context's own nursery. On exit, queued writes get ``CLOSE_DRAIN_SECONDS`` to
    commit, then the writer is cancelled (its producers get ``Unavailable``) and the pool is
    closed.

    Raises ``Unavailable`` when the server cannot be reached within ``connect_timeout`` (the
    message carries libpq's reason), ``SchemaTooNew`` when a newer labctl migrated the database
    (nothing is written), ``ConfigError`` for a malformed URL. ``audit_key`` MACs the audit
    chain (``store.audit.start_chain()`` checks it); without it audit appends fail
    ``Unavailable``.
    """
    opts = options or PgOptions()
    db = await trio.to_thread.run_sync(open_pool, url, opts)
    try:
        await schema.migrate(db)
        await schema.seed(db)
        store = PostgresStore(url, db, max_batch=max_batch, audit_key=audit_key)
        async with running(store.writer, drain_seconds=CLOSE_DRAIN_SECONDS):
            yield store
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(db.close)
