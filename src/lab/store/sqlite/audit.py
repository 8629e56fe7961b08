"""SQLite audit repository: appends go through the group-commit writer, reads are direct."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from lab.model import AuditEntry
from lab.store.rules import audit_page
from lab.store.sqlite.db import CODEC, Database
from lab.store.writeops import Writer, append_audit


class SqliteAudit:
    def __init__(self, db: Database, writer: Writer) -> None:
        self._db = db
        self._writer = writer

    async def append(self, entry: AuditEntry) -> AuditEntry:
        return await append_audit(self._writer, entry)

    async def list(
        self,
        *,
        user: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[AuditEntry]:
        """Entries in ``seq`` order after ``after_seq`` (page with the last seq you got)."""
        query, params = audit_page(
            CODEC,
            "?",
            user=user,
            action=action,
            since=since,
            after_seq=after_seq,
            limit=limit,
        )

        def op(conn: sqlite3.Connection) -> list[AuditEntry]:
            return [CODEC.audit_entry(r) for r in conn.execute(query, params).fetchall()]

        return await self._db.run(op)

    async def last_seq(self) -> int:
        def op(conn: sqlite3.Connection) -> int:
            (seq,) = conn.execute("SELECT coalesce(max(seq), 0) FROM audit").fetchone()
            return int(seq)

        return await self._db.run(op)
