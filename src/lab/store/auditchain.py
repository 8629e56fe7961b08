"""The audit hash chain, pure: no I/O, so labd and ``labctl audit verify`` share it.

``hash = sha256(prev_hash + canonical_json(fields without hash))``; the first entry has
``seq == 1`` and ``prev_hash == ""``. Canonical JSON sorts keys, has no whitespace and writes
times as UTC ISO-8601 with microseconds, so every backend reproduces the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import attrs

from lab.model import AuditEntry

GENESIS = ""


def canonical_time(value: datetime) -> str:
    """The one text form of a time in the chain (and in SQLite columns)."""
    if value.tzinfo is None:
        raise ValueError("audit times must carry a timezone")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_json(entry: AuditEntry) -> str:
    fields: dict[str, Any] = {
        "seq": entry.seq,
        "time": canonical_time(entry.time),
        "user": entry.user,
        "session": entry.session,
        "action": entry.action,
        "resource": entry.resource,
        "result": entry.result,
        "duration_ms": float(entry.duration_ms),
        "source": entry.source,
        "details": entry.details,
        "prev_hash": entry.prev_hash,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(entry: AuditEntry, prev_hash: str) -> str:
    """The hash ``entry`` must carry when it follows an entry hashed ``prev_hash``.

    ``entry.prev_hash`` is part of the hashed fields, so callers set it to ``prev_hash`` first.
    """
    digest = hashlib.sha256()
    digest.update(prev_hash.encode("utf-8"))
    digest.update(canonical_json(entry).encode("utf-8"))
    return digest.hexdigest()


def chain(entry: AuditEntry, seq: int, prev_hash: str) -> AuditEntry:
    """``entry`` as stored at ``seq``, after the entry hashed ``prev_hash``.

    Raises ``ValueError`` or ``TypeError`` for an entry that cannot be hashed (a naive time,
    details that are not JSON).
    """
    draft = attrs.evolve(entry, seq=seq, prev_hash=prev_hash)
    return attrs.evolve(draft, hash=entry_hash(draft, prev_hash))


def verify_chain(
    entries: Iterable[AuditEntry], *, prev_hash: str = GENESIS, prev_seq: int = 0
) -> int | None:
    """The ``seq`` of the first entry that breaks the chain, or ``None`` when it holds.

    An entry breaks the chain when its ``seq`` does not follow the previous one (a deleted or
    inserted row), its ``prev_hash`` is not the previous hash, or its own hash does not match
    its fields (an edited row). Pass ``prev_hash``/``prev_seq`` of the entry before the first
    one to verify a page of a longer chain.
    """
    for entry in entries:
        if (
            entry.seq != prev_seq + 1
            or entry.prev_hash != prev_hash
            or entry.hash != entry_hash(entry, prev_hash)
        ):
            return entry.seq
        prev_hash, prev_seq = entry.hash, entry.seq
    return None
