"""The audit log: read it (filtered, paged by ``seq``), verify its keyed chain, hand out signed
checkpoints."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from quart import Blueprint, request

from lab.errors import Invalid
from lab.labd.access.auth import requires
from lab.labd.audit.checkpoints import parse_checkpoint, verify_log
from lab.labd.context import ctx
from lab.model import unstructure
from lab.model.safejson import loads
from lab.store import Checkpoint, Verdict

bp = Blueprint("audit", __name__)

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_WITNESSES = 100


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


def _answer(verdict: Verdict, checkpoints: int) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "ok": verdict.ok,
        "kind": verdict.kind,
        "checked": verdict.checked,
        "broken_at": verdict.broken_at,
        "last_seq": verdict.last_seq,
        "head": verdict.head,
        "legacy": verdict.legacy,
        "checkpoints": checkpoints,
    }
    if not verdict.ok:
        answer["reason"] = verdict.reason
        answer["entry"] = unstructure(verdict.entry) if verdict.entry is not None else None
    return answer


@bp.get("/api/audit/verify")
@requires("user", action="audit:verify", resource="audit/*")
async def verify() -> dict[str, Any]:
    """Walk the whole chain against its start record and labd's signed checkpoints; report the
    first break and its kind (see lab.store.auditverify)."""
    c = ctx()
    verdict, used = await verify_log(c.store, c.audit_keys, c.checkpointer.log, [])
    return _answer(verdict, used)


@bp.post("/api/audit/verify")
@requires("user", action="audit:verify", resource="audit/*")
async def verify_with_witnesses() -> dict[str, Any]:
    """Like GET, also checked against the checkpoints a witness kept (body ``checkpoints``)."""
    # Within the size and depth limits every JSON body has (a deep one is a 400, not a 500).
    data = loads(await request.get_data(as_text=False))
    items = data.get("checkpoints") if isinstance(data, dict) else None
    if not isinstance(items, list) or len(items) > MAX_WITNESSES:
        raise Invalid(
            f"checkpoints must be a list of at most {MAX_WITNESSES} checkpoint objects",
            details={"fields": ["body.checkpoints"]},
        )
    c = ctx()
    witnesses: list[Checkpoint] = []
    for i, item in enumerate(items):
        try:
            witnesses.append(
                parse_checkpoint(item, c.audit_keys.signer.public_key, source=f"witness #{i + 1}")
            )
        except Invalid as exc:
            verdict = Verdict(
                kind="bad_checkpoint", checked=0, last_seq=0, head="", reason=exc.message
            )
            return _answer(verdict, len(items))
    verdict, used = await verify_log(c.store, c.audit_keys, c.checkpointer.log, witnesses)
    return _answer(verdict, used)


@bp.get("/api/audit/checkpoint")
@requires("user", action="audit:read", resource="audit/*")
async def checkpoint() -> dict[str, Any]:
    """The newest signed checkpoint (a fresh one of the current head) and the public key that
    checks it: keep it somewhere else and give it back to verify."""
    c = ctx()
    latest = await c.checkpointer.write() or c.checkpointer.latest
    return {
        "checkpoint": latest,
        "public_key": base64.b64encode(c.audit_keys.signer.public_key).decode(),
        "key_id": c.audit_keys.key_id,
    }


@bp.get("/api/audit/witness")
@requires("server", "bastion")
async def witness() -> dict[str, Any]:
    """The newest checkpoint labd wrote (no new one), for agents and bastions to keep."""
    c = ctx()
    return {
        "checkpoint": c.checkpointer.latest,
        "public_key": base64.b64encode(c.audit_keys.signer.public_key).decode(),
        "key_id": c.audit_keys.key_id,
    }
