"""The hot write paths (audit, heartbeats) batched by the group-commit writer.

One batch is one SERIALIZABLE transaction. Unlike SQLite, the chain head is never cached: other
labd replicas append to the same table, so every batch reads the current tail (max seq and its
hash) and inserts seq+1, seq+2, ... in the same transaction. Two replicas that read the same
tail both try the same seq; the PRIMARY KEY makes one of them fail (40001, or a unique
violation on PostgreSQL), and ``Database.run`` retries its whole batch on top of the new tail.

Items that would make the database refuse the whole transaction (a naive time, a NUL in text,
a heartbeat for a deleted server) are caught before or without an error, so they fail alone.
"""

# ruff: noqa: S608 -- SQL is assembled only from constant column lists, never from input.

from __future__ import annotations

from datetime import datetime

import psycopg.errors

from lab.errors import Invalid, LabError, NotFound
from lab.model import AuditEntry
from lab.store.auditchain import AuditKey
from lab.store.postgres.db import CODEC, Conn, RetryTransaction
from lab.store.rows import AUDIT_COLS, Params
from lab.store.sql.audit import batch_row, chain_tail, change_row
from lab.store.writeops import AuditAppend, Outcome, WriteOp

_INSERT_AUDIT = (
    f"INSERT INTO audit ({AUDIT_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_HEARTBEAT = (
    # Guarded by EXISTS so a heartbeat for a deleted server matches nothing instead of raising
    # a foreign-key error, which would abort the whole batch's transaction.
    "INSERT INTO agent_leases (server_id, replica, seen, lease_until)"
    " SELECT %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM servers WHERE id = %s)"
    " ON CONFLICT (server_id) DO UPDATE SET replica = excluded.replica,"
    " seen = excluded.seen, lease_until = excluded.lease_until"
)


def _check_text(*values: str) -> None:
    if any("\x00" in v for v in values):
        raise ValueError("text may not contain NUL characters")


def _check_time(*values: datetime) -> None:
    if any(v.tzinfo is None for v in values):
        raise ValueError("times must carry a timezone")


def _insert(conn: Conn, rows: list[Params]) -> None:
    try:
        with conn.cursor() as cur:
            cur.executemany(_INSERT_AUDIT, rows)
    except psycopg.errors.UniqueViolation as exc:
        # PostgreSQL reports a concurrent insert of our seq as a unique violation when the
        # index page it read was not the one the other writer touched; same meaning.
        raise RetryTransaction(str(exc)) from exc


def append_in_transaction(conn: Conn, key: AuditKey | None, entry: AuditEntry) -> AuditEntry:
    """Chain and insert ``entry`` in the caller's transaction (the change it records commits
    with it; a retry runs it again on the new tail). Raises ``Unavailable`` (reason
    ``audit_unavailable``) for an entry that cannot be chained, so the change is refused with
    it, and ``RetryTransaction`` when another writer took the seq."""
    stored, row = change_row(CODEC, key, entry, chain_tail(conn))
    _insert(conn, [row])
    return stored


def flush_batch(conn: Conn, ops: list[WriteOp], key: AuditKey | None) -> list[Outcome | Exception]:
    """Commit ``ops`` in the caller's transaction; one outcome per op (a result or its error).

    Runs again from scratch when the transaction is retried, so the chain is recomputed on
    the tail that won. Raises ``RetryTransaction`` when another writer took our seq.
    """
    outcomes: list[Outcome | Exception] = []
    audit_rows: list[Params] = []
    tail = chain_tail(conn) if any(isinstance(op, AuditAppend) for op in ops) else (0, "")
    for op in ops:
        if isinstance(op, AuditAppend):
            chained = batch_row(CODEC, key, op.entry, tail)
            if isinstance(chained, LabError):
                outcomes.append(chained)
                continue
            entry, row = chained
            tail = entry.seq, entry.hash
            audit_rows.append(row)
            outcomes.append(entry)
            continue
        try:
            _check_text(op.server_id, op.replica)
            _check_time(op.seen, op.lease_until)
        except ValueError as exc:
            outcomes.append(Invalid(f"cannot store this heartbeat: {exc}"))
            continue
        cur = conn.execute(
            _HEARTBEAT, (op.server_id, op.replica, op.seen, op.lease_until, op.server_id)
        )
        outcomes.append(None if cur.rowcount else NotFound(f"server id {op.server_id!r} not found"))
    if audit_rows:
        _insert(conn, audit_rows)
    return outcomes
