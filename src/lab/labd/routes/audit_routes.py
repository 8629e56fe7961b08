"""The audit log: read it (filtered, paged by ``seq``) and verify its hash chain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from quart import Blueprint, request

from lab.errors import Invalid
from lab.labd.app import ctx
from lab.labd.auth import requires
from lab.model import AuditEntry, unstructure
from lab.store.auditchain import GENESIS, entry_hash, verify_chain

bp = Blueprint("audit", __name__)

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
VERIFY_PAGE = 5000


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise Invalid(
            f"{name} must be an integer from {low} to {high}", details={"fields": [f"query.{name}"]}
        )
    return value


def _since() -> datetime | None:
    raw = request.args.get("since")
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise Invalid(
            "since must be an ISO 8601 time with a timezone, e.g. 2026-11-01T12:00:00+00:00",
            details={"fields": ["query.since"]},
        )
    return value


@bp.get("/api/audit")
@requires("user", action="audit:read", resource="audit/*")
async def list_() -> dict[str, Any]:
    """Entries in ``seq`` order; page with ``after_seq`` = the ``last_seq`` of the answer."""
    after_seq = _int_arg("after_seq", 0, 0, 2**62)
    limit = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    since = _since()
    entries = await ctx().store.audit.list(
        user=request.args.get("user") or None,
        action=request.args.get("action") or None,
        since=since,
        after_seq=after_seq,
        limit=limit,
    )
    return {
        "items": [unstructure(e) for e in entries],
        "last_seq": entries[-1].seq if entries else after_seq,
    }


def why_broken(entry: AuditEntry, prev_hash: str, prev_seq: int) -> str:
    """Why ``entry`` does not follow the entry (``prev_seq``, ``prev_hash``) before it."""
    if entry.seq > prev_seq + 1:
        return f"entries {prev_seq + 1} to {entry.seq - 1} are missing (deleted)"
    if entry.seq != prev_seq + 1:
        return f"entry {entry.seq} is out of order after entry {prev_seq}"
    if entry.prev_hash != prev_hash:
        return "its prev_hash is not the hash of the entry before (deleted or reordered)"
    if entry.hash != entry_hash(entry, prev_hash):
        return "its fields do not match its hash (edited)"
    return "unknown"


@bp.get("/api/audit/verify")
@requires("user", action="audit:verify", resource="audit/*")
async def verify() -> dict[str, Any]:
    """Walk the whole chain from the first entry; report the first entry that breaks it."""
    store = ctx().store
    prev_hash, prev_seq, checked = GENESIS, 0, 0
    while True:
        page = await store.audit.list(after_seq=prev_seq, limit=VERIFY_PAGE)
        if not page:
            break
        broken = verify_chain(page, prev_hash=prev_hash, prev_seq=prev_seq)
        if broken is not None:
            for entry in page:
                if entry.seq == broken:
                    break
                checked += 1
                prev_hash, prev_seq = entry.hash, entry.seq
            return {
                "ok": False,
                "checked": checked,
                "broken_at": broken,
                "reason": why_broken(entry, prev_hash, prev_seq),
                "entry": unstructure(entry),
            }
        checked += len(page)
        prev_hash, prev_seq = page[-1].hash, page[-1].seq
    return {
        "ok": True,
        "checked": checked,
        "broken_at": None,
        "last_seq": prev_seq,
        "head": prev_hash,
    }
