"""A change and its audit entry commit in one transaction.

labd marks a request's context with :func:`audit_next_change` before the handler runs. The
first write transaction a repository runs in that context (SQLite: :func:`transaction`;
PostgreSQL: ``Database.run``) builds the entry, chains it onto the audit log and inserts it
before its COMMIT, so a crash leaves both the change and its entry or neither. Reads never
carry it. Once committed, :attr:`PendingAudit.stored` holds the entry and later writes of the
same request carry nothing (the entry describes the whole request).

The context travels with ``contextvars`` into the worker thread that runs the transaction
(``trio.to_thread.run_sync`` copies it), so repositories need no extra argument.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar

from attrs import define

from lab.model import AuditEntry


@define
class PendingAudit:
    """The entry the next write of this context commits with; ``build`` runs in the worker
    thread right before COMMIT, so it must only read values captured beforehand."""

    build: Callable[[], AuditEntry]
    stored: AuditEntry | None = None
    more: Callable[[AuditEntry], Sequence[AuditEntry]] | None = None
    """Entries chained right after the request's own one, in the same transaction (one per
    object an apply changes): given the built request entry, for its user, session and source."""

    def entries(self) -> list[AuditEntry]:
        """The request's entry and those that follow it, built now (in the worker thread)."""
        first = self.build()
        return [first, *(self.more(first) if self.more is not None else ())]


_PENDING: ContextVar[PendingAudit | None] = ContextVar("lab_pending_audit", default=None)


def audit_next_change(build: Callable[[], AuditEntry]) -> PendingAudit:
    """Make the next write transaction of the current context carry the entry ``build``
    returns; returns the pending entry (look at ``stored`` after the writes)."""
    pending = PendingAudit(build=build)
    _PENDING.set(pending)
    return pending


def pending_audit() -> PendingAudit | None:
    """The entry the current write must carry, or None (none asked, or already committed)."""
    pending = _PENDING.get()
    return pending if pending is not None and pending.stored is None else None


__all__ = ["PendingAudit", "audit_next_change", "pending_audit"]
