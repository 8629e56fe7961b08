"""The hot write paths (audit, heartbeats) batched by the group-commit writer.

One batch is one transaction; each item runs under its own SAVEPOINT so an item that fails
(a heartbeat for a deleted server) fails alone while the rest of the batch commits. The audit
chain head is cached here and advanced only for rows that made it into the transaction; if the
COMMIT itself fails it is re-read from the database.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import TypeAlias

import attrs
from attrs import define, frozen

from lab.errors import Invalid, LabError, NotFound, Unavailable
from lab.model import AuditEntry
from lab.store.auditchain import GENESIS, entry_hash
from lab.store.groupcommit import GroupCommitWriter
from lab.store.sqlite.db import dumps, ts


@frozen(kw_only=True)
class Heartbeat:
    server_id: str
    replica: str
    seen: datetime
    lease_until: datetime


@frozen(kw_only=True)
class AuditAppend:
    entry: AuditEntry


WriteOp: TypeAlias = Heartbeat | AuditAppend
Outcome: TypeAlias = AuditEntry | None
Writer: TypeAlias = GroupCommitWriter[WriteOp, Outcome]


@define
class ChainHead:
    """The last audit entry's seq and hash; touched only under the connection's limiter."""

    seq: int = 0
    hash: str = GENESIS
    loaded: bool = False

    def load(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        self.seq, self.hash = (row[0], row[1]) if row else (0, GENESIS)
        self.loaded = True


def _heartbeat(conn: sqlite3.Connection, op: Heartbeat) -> None:
    try:
        conn.execute(
            "INSERT INTO agent_leases (server_id, replica, seen, lease_until) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (server_id) DO UPDATE SET replica = excluded.replica,"
            " seen = excluded.seen, lease_until = excluded.lease_until",
            (op.server_id, op.replica, ts(op.seen), ts(op.lease_until)),
        )
    except sqlite3.IntegrityError as exc:
        raise NotFound(f"server id {op.server_id!r} not found") from exc


def _append(conn: sqlite3.Connection, op: AuditAppend, head: ChainHead) -> AuditEntry:
    entry = attrs.evolve(op.entry, seq=head.seq + 1, prev_hash=head.hash, hash="")
    entry = attrs.evolve(entry, hash=entry_hash(entry, head.hash))
    conn.execute(
        "INSERT INTO audit (seq, time, user, session, action, resource, result, duration_ms,"
        " source, details, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            entry.seq,
            ts(entry.time),
            entry.user,
            entry.session,
            entry.action,
            entry.resource,
            entry.result,
            float(entry.duration_ms),
            entry.source,
            dumps(entry.details),
            entry.prev_hash,
            entry.hash,
        ),
    )
    head.seq, head.hash = entry.seq, entry.hash
    return entry


def _apply(conn: sqlite3.Connection, op: WriteOp, head: ChainHead) -> Outcome:
    if isinstance(op, Heartbeat):
        _heartbeat(conn, op)
        return None
    return _append(conn, op, head)


def flush_batch(
    conn: sqlite3.Connection, ops: list[WriteOp], head: ChainHead
) -> list[Outcome | Exception]:
    """Commit ``ops`` in one transaction; one outcome per op (a result or its own error).

    Raises (failing the whole batch) when the transaction cannot begin or commit.
    """
    if not head.loaded:
        head.load(conn)
    outcomes: list[Outcome | Exception] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for op in ops:
            conn.execute("SAVEPOINT item")
            try:
                outcome = _apply(conn, op, head)
            except (LabError, sqlite3.Error, ValueError, TypeError) as exc:
                conn.execute("ROLLBACK TO item")
                outcomes.append(exc if isinstance(exc, LabError) else _mapped(exc))
            else:
                outcomes.append(outcome)
            conn.execute("RELEASE item")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        # Rows we counted into the head were rolled back: re-read it on the next batch.
        head.loaded = False
        raise
    return outcomes


def _mapped(exc: Exception) -> Exception:
    if isinstance(exc, ValueError | TypeError):
        return Invalid(f"cannot store this record: {exc}")
    return Unavailable(f"database write failed: {exc}")
