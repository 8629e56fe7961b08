"""The audit repository: appends go through the backend's group-commit writer, reads and the
chain's start record are direct."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from lab.errors import Invalid, LabError, Unavailable
from lab.model import AuditEntry
from lab.store.auditchain import (
    GENESIS,
    START_SETTING,
    AuditKey,
    ChainStart,
    chain_keyed,
    read_start,
    settle_start,
)
from lab.store.rows import Params, RowCodec
from lab.store.rules import audit_page
from lab.store.sql.dialect import Runner, Tx
from lab.store.writeops import Writer, append_audit


def chain_tail(conn: Any) -> tuple[int, str]:
    """(seq, hash) of the last entry on a driver connection; (0, GENESIS) when empty."""
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS)


def chain_row(
    codec: RowCodec, key: AuditKey | None, entry: AuditEntry, tail: tuple[int, str]
) -> tuple[AuditEntry, Params]:
    """``entry`` chained after ``tail`` (seq, hash) under ``key``, and its row. Pure Python, so
    a bad entry (a naive time, details that are not JSON, text the database refuses) fails here
    with ValueError or TypeError before anything touches the database; ``Unavailable`` for a
    store opened without an audit key."""
    if key is None:
        raise Unavailable("this store was opened without an audit key: it cannot append")
    chained = chain_keyed(entry, tail[0] + 1, tail[1], key)
    return chained, codec.audit_params(chained)


def change_row(
    codec: RowCodec, key: AuditKey | None, entry: AuditEntry, tail: tuple[int, str]
) -> tuple[AuditEntry, Params]:
    """:func:`chain_row` for the entry a change commits with (each backend's
    ``append_in_transaction``): an entry that cannot be chained refuses the change with
    ``Unavailable`` (reason ``audit_unavailable``), since it is not the client's fault."""
    try:
        return chain_row(codec, key, entry, tail)
    except (ValueError, TypeError) as exc:
        raise Unavailable(
            f"cannot store the audit entry of this change: {exc}",
            details={"reason": "audit_unavailable"},
        ) from exc


def batch_row(
    codec: RowCodec, key: AuditKey | None, entry: AuditEntry, tail: tuple[int, str]
) -> tuple[AuditEntry, Params] | LabError:
    """:func:`chain_row` for one entry of a group-commit batch: a failure is that entry's
    outcome (``Invalid`` for a bad entry), so the rest of the batch still commits."""
    try:
        return chain_row(codec, key, entry, tail)
    except (ValueError, TypeError) as exc:
        return Invalid(f"cannot store this audit entry: {exc}")
    except LabError as exc:
        return exc


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
