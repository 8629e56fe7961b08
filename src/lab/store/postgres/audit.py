"""PostgreSQL audit repository: appends go through the group-commit writer, reads are direct."""

# ruff: noqa: S608 -- SQL is assembled only from constant column lists, never from input.

from __future__ import annotations

from datetime import datetime

from lab.errors import Invalid
from lab.model import AuditEntry
from lab.store.postgres.db import CODEC, Conn, Database
from lab.store.rows import AUDIT_COLS
from lab.store.writeops import AuditAppend, Writer

MAX_PAGE = 10_000


class PgAudit:
    def __init__(self, db: Database, writer: Writer) -> None:
        self._db = db
        self._writer = writer

    async def append(self, entry: AuditEntry) -> AuditEntry:
        stored = await self._writer.submit(AuditAppend(entry=entry))
        assert isinstance(stored, AuditEntry)
        return stored

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
        if not 0 < limit <= MAX_PAGE:
            raise Invalid(f"limit must be between 1 and {MAX_PAGE}", details={"limit": limit})
        clauses: list[str] = ["seq > %s"]
        params: list[object] = [after_seq]
        if user is not None:
            clauses.append('"user" = %s')
            params.append(user)
        if action is not None:
            clauses.append("action = %s")
            params.append(action)
        if since is not None:
            clauses.append("time >= %s")
            params.append(since)
        query = (
            f"SELECT {AUDIT_COLS} FROM audit WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT %s"
        )

        def op(conn: Conn) -> list[AuditEntry]:
            return [CODEC.audit_entry(r) for r in conn.execute(query, [*params, limit]).fetchall()]

        return await self._db.read(op)

    async def last_seq(self) -> int:
        def op(conn: Conn) -> int:
            row = conn.execute("SELECT coalesce(max(seq), 0) FROM audit").fetchone()
            return int(row[0]) if row else 0

        return await self._db.read(op)
