"""The audit repository: appends go through the backend's group-commit writer, reads and the
chain's start record are direct."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from lab.errors import Unavailable
from lab.model import AuditEntry
from lab.store.auditchain import (
    GENESIS,
    START_SETTING,
    AuditKey,
    ChainStart,
    read_start,
    settle_start,
)
from lab.store.rules import audit_page
from lab.store.sql.dialect import Runner, Tx
from lab.store.writeops import Writer, append_audit


def chain_tail(conn: Any) -> tuple[int, str]:
    """(seq, hash) of the last entry on a driver connection; (0, GENESIS) when empty."""
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS)


def stored_start(tx: Tx) -> str | None:
    """The settings value of the chain's start record (None when the row is missing)."""
    row = tx.one("SELECT value FROM settings WHERE key = ?", (START_SETTING,))
    return None if row is None else str(row[0])


def start_chain(tx: Tx, key: AuditKey) -> ChainStart:
    """Check (or, on a migrated database, write) the keyed chain's start record, in the
    caller's transaction; see :func:`lab.store.auditchain.settle_start` for what it raises."""
    stored = stored_start(tx)
    seq, head = chain_tail(tx.conn)
    start, write = settle_start(stored, seq, head, key, datetime.now(UTC))
    if write:
        tx.run("UPDATE settings SET value = ? WHERE key = ?", (start.to_json(), START_SETTING))
    return start


class Audit:
    def __init__(self, db: Runner, writer: Writer, key: AuditKey | None = None) -> None:
        self._db = db
        self._writer = writer
        self._key = key

    async def start_chain(self) -> ChainStart:
        if self._key is None:
            raise Unavailable("this store was opened without an audit key")
        return await self._db.write(start_chain, self._key)

    async def chain_start(self) -> ChainStart | Literal["pending"] | None:
        return read_start(await self._db.read(stored_start))

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
            self._db.dialect.codec,
            "?",
            user=user,
            action=action,
            since=since,
            after_seq=after_seq,
            limit=limit,
        )

        def op(tx: Tx) -> list[AuditEntry]:
            return [tx.dialect.codec.audit_entry(r) for r in tx.all(query, params)]

        return await self._db.read(op)

    async def last_seq(self) -> int:
        def op(tx: Tx) -> int:
            (seq,) = tx.one("SELECT coalesce(max(seq), 0) FROM audit")
            return int(seq)

        return await self._db.read(op)

    async def head(self) -> tuple[int, str]:
        """(seq, hash) of the last entry; (0, "") when the log is empty."""

        def op(tx: Tx) -> tuple[int, str]:
            row = tx.one("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            return (int(row[0]), str(row[1])) if row else (0, "")

        return await self._db.read(op)
