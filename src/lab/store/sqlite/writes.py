"""The hot write paths (audit, heartbeats) batched by the group-commit writer.

One batch is one transaction; each item runs under its own SAVEPOINT so an item that fails
(a heartbeat for a deleted server) fails alone while the rest of the batch commits. The audit
chain head is cached here and advanced only for rows that made it into the transaction; if the
COMMIT itself fails it is re-read from the database.
"""

# ruff: noqa: S608 -- SQL is assembled only from constant column lists, never from input.

from __future__ import annotations

import sqlite3

from attrs import define

from lab.errors import Invalid, LabError, NotFound, Unavailable
from lab.model import AuditEntry
from lab.store.auditchain import GENESIS, AuditKey
from lab.store.rows import AUDIT_COLS, Params
from lab.store.sql.audit import batch_row, chain_tail, change_row
from lab.store.sqlite.db import CODEC, ts
from lab.store.writeops import AuditAppend, Heartbeat, Outcome, WriteOp


@define
class ChainHead:
    """The last audit entry's seq and hash, and the key that MACs the next one; touched only
    under the connection's limiter. Without a key (a store opened by a tool, not labd) every
    append fails ``Unavailable``."""

    key: AuditKey | None = None
    seq: int = 0
    hash: str = GENESIS
    loaded: bool = False

    def load(self, conn: sqlite3.Connection) -> None:
        self.seq, self.hash = chain_tail(conn)
        self.loaded = True

    def forget(self) -> None:
        """Rows counted into the head were rolled back: re-read it before the next append."""
        self.loaded = False

    @property
    def tail(self) -> tuple[int, str]:
        return self.seq, self.hash

    def advance(self, entry: AuditEntry) -> None:
        self.seq, self.hash = entry.seq, entry.hash


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


_INSERT_AUDIT = f"INSERT INTO audit ({AUDIT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def append_in_transaction(
    conn: sqlite3.Connection, head: ChainHead, entry: AuditEntry
) -> AuditEntry:
    """Chain and insert ``entry`` inside the caller's open write transaction (the change it
    records commits with it), after the cached head. The caller resets ``head.loaded`` if the
    transaction rolls back. Raises as :func:`lab.store.sql.audit.change_row`."""
    if not head.loaded:
        head.load(conn)
    stored, row = change_row(CODEC, head.key, entry, head.tail)
    head.advance(stored)
    conn.execute(_INSERT_AUDIT, row)
    return stored


def flush_batch(
    conn: sqlite3.Connection, ops: list[WriteOp], head: ChainHead
) -> list[Outcome | Exception]:
    """Commit ``ops`` in one transaction; one outcome per op (a result or its own error).

    Audit rows are chained in Python and inserted with one ``executemany``; heartbeats run
    one by one under a SAVEPOINT because one for a deleted server must fail alone. Raises
    (failing the whole batch) when the transaction cannot begin, insert or commit.
    """
    outcomes: list[Outcome | Exception] = []
    audit_rows: list[Params] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not head.loaded:
            # Under the write lock, so no other connection can move the head meanwhile.
            head.load(conn)
        for op in ops:
            if isinstance(op, AuditAppend):
                chained = batch_row(CODEC, head.key, op.entry, head.tail)
                if isinstance(chained, LabError):
                    outcomes.append(chained)
                    continue
                entry, row = chained
                head.advance(entry)
                audit_rows.append(row)
                outcomes.append(entry)
                continue
            conn.execute("SAVEPOINT item")
            try:
                _heartbeat(conn, op)
            except (LabError, sqlite3.Error, ValueError, TypeError) as exc:
                conn.execute("ROLLBACK TO item")
                outcomes.append(exc if isinstance(exc, LabError) else _mapped(exc))
            else:
                outcomes.append(None)
            conn.execute("RELEASE item")
        if audit_rows:
            conn.executemany(_INSERT_AUDIT, audit_rows)
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
