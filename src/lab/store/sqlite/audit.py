"""SQLite audit repository: appends go through the group-commit writer, reads are direct."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from lab.errors import Unavailable
from lab.model import AuditEntry
from lab.store.auditchain import AuditKey, ChainStart
from lab.store.rules import audit_page
from lab.store.sqlite.db import CODEC, Database
from lab.store.sqlite.writes import start_chain
from lab.store.writeops import Writer, append_audit


class SqliteAudit:
    def __init__(self, db: Database, writer: Writer, key: AuditKey | None = None) -> None:
        self._db = db
        self._writer = writer
        self._key = key

    async def start_chain(self) -> ChainStart:
        if self._key is None:
            raise Unavailable("this store was opened without an audit key")
        return await self._db.run(start_chain, self._key)

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

    async def head(self) -> tuple[int, str]:
        """(seq, hash) of the last entry; (0, "") when the log is empty."""

        def op(conn: sqlite3.Connection) -> tuple[int, str]:
            row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            return (int(row[0]), str(row[1])) if row else (0, "")

        return await self._db.run(op)
