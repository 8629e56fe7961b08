"""The items of the hot write paths, the same in both backends: each backend's ``writes``
module commits a batch of them in one transaction (see :mod:`lab.store.groupcommit`)."""

from __future__ import annotations

from datetime import datetime
from typing import TypeAlias

from attrs import frozen

from lab.model import AuditEntry
from lab.store.groupcommit import GroupCommitWriter


@frozen(kw_only=True)
class Heartbeat:
    """Renew a server's agent presence lease."""

    server_id: str
    replica: str
    seen: datetime
    lease_until: datetime


@frozen(kw_only=True)
class AuditAppend:
    """Chain ``entry`` onto the audit log; its outcome is the entry as stored."""

    entry: AuditEntry


WriteOp: TypeAlias = Heartbeat | AuditAppend
Outcome: TypeAlias = AuditEntry | None
Writer: TypeAlias = GroupCommitWriter[WriteOp, Outcome]

CLOSE_DRAIN_SECONDS = 10.0
"""On close, queued writes get this long to commit before they are failed."""


async def append_audit(writer: Writer, entry: AuditEntry) -> AuditEntry:
    """Submit ``entry`` and return it as chained and stored (durable on return).

    Raises ``Invalid`` for an entry that cannot be chained or stored, and what its batch
    raised (``Unavailable`` when the store is closed or the database failed). On cancellation
    the entry may still be committed: the outcome is unknown.
    """
    stored = await writer.submit(AuditAppend(entry=entry))
    assert isinstance(stored, AuditEntry)
    return stored
