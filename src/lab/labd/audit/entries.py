"""Recording audited actions. labd writes the audit log itself (never the agent), and an
action is acknowledged only after its entry is durable.

There are two ways in, and only two. Requests (REST, and WebSocket handshakes) are audited by
the hooks here; streams and agent events, which outlive their request, call :func:`record`.

Once a REST request is authenticated (:func:`passed`), its entry is handed to the store
(:mod:`lab.store.audited`): the first write transaction the handler causes commits the entry
with the change, so a crash never leaves a change without its entry. A request that changed
nothing (a read, a refusal, a failure before any write) is recorded by :func:`audit_response`
(an ``after_request`` hook), which awaits the group-committed entry before the response leaves
and answers 503 instead when it cannot be written (fail closed); it also adds a follow-up entry
when the answer differs from what the committed entry says (a failure after the change) or the
handler annotated more afterwards. Handlers add details with :func:`annotate` (before their
first write, so the details commit with the change). A WebSocket refused by the access check is
recorded by :func:`audit_refused_handshake` (an ``after_websocket`` hook); one that passed is
left to its handler: the exec/logs relays and the agent channel call :func:`record`. The hooks
read the answered error as a value (lab.labd.api.errors.answered_error), never from the body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from attrs import define, field
from quart import (
    Response,
    current_app,
    g,
    has_request_context,
    has_websocket_context,
    request,
    websocket,
)
from quart.typing import ResponseTypes

from lab.labd.api.answers import success_status
from lab.labd.api.errors import answered_error, error_response
from lab.labd.context import ctx
from lab.model import AuditEntry
from lab.model.safejson import loads
from lab.model.text import plain_text_problem
from lab.runtime.logs import current_request_id
from lab.store import PendingAudit, audit_next_change

if TYPE_CHECKING:
    from lab.labd.access.auth import Principal
    from lab.labd.context import LabdContext

log = logging.getLogger(__name__)

# Public routes that are audited anyway, with the action they record. Other public routes
# (health probes, the CA bundle and the CRL) are read-only and not audited.
PUBLIC_ACTIONS = {
    "/api/auth/enroll": "auth:enroll",
    "/api/auth/user-enroll": "auth:user-enroll",
    "/api/auth/bastion-enroll": "auth:bastion-enroll",
}
# Which body field names the identity an enrollment asks for, to fill ``resource``.
_ENROLL_SUBJECT = {
    "/api/auth/enroll": ("hostname", "server"),
    "/api/auth/user-enroll": (
        "username",
        "user",
    ),
    "/api/auth/bastion-enroll": ("name", "bastion"),
}
_MAX_MESSAGE = 500
REFUSAL_AUDIT_INTERVAL = 3600.0
"""Seconds between two audit entries for refused handshakes of one identity and reason."""


@define(kw_only=True)
class Pending:
    """What the hook will record for the current request, filled as authentication goes."""

    action: str
    resource: str
    started: float = field(factory=time.perf_counter)
    details: dict[str, Any] = field(factory=dict)
    # Captured when the entry is handed to the store (the store builds it in a worker thread).
    principal: Principal | None = None
    request: dict[str, Any] = field(factory=dict)
    source: str = ""
    success_status: int = 200
    committed: PendingAudit | None = None
    committed_details: dict[str, Any] = field(factory=dict)
    committed_resource: str = ""

    def entry(self) -> AuditEntry:
        """The entry as of now, for the change about to commit (pure: runs in a thread)."""
        self.committed_details = dict(self.details)
        self.committed_resource = self.resource
        who = self.principal
        return AuditEntry(
            user=who.subject if who is not None else "",
            session=who.serial if who is not None else "",
            action=self.action,
            resource=self.resource,
            result="success",
            duration_ms=round((time.perf_counter() - self.started) * 1000, 3),
            source=self.source,
            details={**self.request, "status": self.success_status, **self.details},
        )


def begin(action: str, resource: str) -> Pending:
    """Mark the current request as audited (called by :func:`lab.labd.access.auth.authenticate`)."""
    pending = Pending(action=action, resource=resource)
    g.lab_audit = pending
    return pending


def passed(context: LabdContext, who: Principal | None) -> None:
    """The current request passed the access check. A REST request's entry now commits with
    the first change its handler makes (see the module docstring); a WebSocket's handler
    records its own entries with :func:`record`, so the hook has nothing left to write."""
    if has_websocket_context():
        g.pop("lab_audit", None)
        return
    _commit_with_changes(context, who)


def _commit_with_changes(context: LabdContext, who: Principal | None) -> None:
    pending: Pending | None = g.get("lab_audit")
    if pending is None or not context.config.audit_enabled:
        return
    pending.principal = who
    pending.source = request.remote_addr or ""
    pending.request = {"method": request.method, "path": request.path}
    rid = request_id()
    if rid is not None:
        pending.request["request_id"] = rid
    pending.success_status = success_status(current_app.view_functions.get(request.endpoint or ""))
    pending.committed = audit_next_change(pending.entry)


def annotate(**details: Any) -> None:
    """Add JSON-serialisable ``details`` to the current request's audit entry; call it before
    the write they describe, so they commit with it. Outside a request it does nothing."""
    if not (has_request_context() or has_websocket_context()):
        return
    pending: Pending | None = g.get("lab_audit")
    if pending is not None:
        pending.details.update(details)


def set_resource(resource: str) -> None:
    """Name the resource of the current request's audit entry once the handler knows it
    (before the change, so it commits with it; after, it goes into a follow-up entry)."""
    pending: Pending | None = g.get("lab_audit")
    if pending is not None:
        pending.resource = resource


def set_action(action: str, resource: str) -> None:
    """Name the action and resource of the current request's audit entry, for a route whose
    policy checks each target itself (``per_target``); before its first change."""
    pending: Pending | None = g.get("lab_audit")
    if pending is not None:
        pending.action = action
        pending.resource = resource


def also_record(build: Callable[[AuditEntry], Sequence[AuditEntry]]) -> None:
    """Commit the entries ``build`` returns right after the current request's own entry, in
    the same transaction as its first change (one entry per object an apply changes). ``build``
    gets the request's entry (for its user, session and source) and runs in a worker thread."""
    pending: Pending | None = g.get("lab_audit")
    if pending is not None and pending.committed is not None:
        pending.committed.more = build


def note(*, subject: str | None = None, **details: Any) -> None:
    """What lab.labd.identity tells the audit as an enrollment goes: the identity enrolled
    (``subject``, the entry's resource) and details; see :func:`annotate`."""
    if subject is not None:
        set_resource(subject)
    annotate(**details)


def result_of(status: int) -> str:
    if status < 400:
        return "success"
    if status in (401, 403):
        return "denied"
    return "error"


async def record(
    context: LabdContext,
    *,
    action: str,
    resource: str = "",
    result: str = "success",
    principal: Principal | None = None,
    user: str = "",
    source: str = "",
    duration_ms: float = 0.0,
    details: dict[str, Any] | None = None,
) -> AuditEntry | None:
    """Append one entry and return it once durable (group commit); None when the audit log is
    switched off (benchmarks only). Raises if the write fails, so a caller that cannot audit
    refuses the action (fail closed). For streams and agent events; a request's own entry is
    the hooks' (see the module docstring). Cancelled, the entry may still be written."""
    if not context.config.audit_enabled:
        return None
    entry = AuditEntry(
        user=principal.subject if principal is not None else user,
        session=principal.serial if principal is not None else "",
        action=action,
        resource=resource,
        result=result,
        duration_ms=duration_ms,
        source=source,
        details=details or {},
    )
    with context.metrics.audit_commit():
        return await context.store.audit.append(entry)


async def _record_request(
    context: LabdContext,
    pending: Pending,
    resource: str,
    status: int,
    source: str | None,
    details: dict[str, Any],
) -> None:
    """The hooks' entry for the current request or handshake, timed from its start."""
    await record(
        context,
        action=pending.action,
        resource=resource,
        result=result_of(status),
        principal=g.get("principal"),
        source=source or "",
        duration_ms=round((time.perf_counter() - pending.started) * 1000, 3),
        details=details,
    )


def request_id() -> str | None:
    """This request's id, as its log records and ``X-Request-Id`` answer show it: the client's
    ``X-Request-Id`` when it is a sane token, else one labd made (see lab.labd.app)."""
    return current_request_id()


async def _enroll_subject(rule: str) -> str:
    """``server/NAME`` or ``user/NAME`` from an enrollment body (never the token)."""
    key, kind = _ENROLL_SUBJECT[rule]
    try:
        data = loads(await request.get_data(as_text=False))
    except Exception:  # an unreadable (413), malformed or too deep body names no subject
        return ""
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str) or not 0 < len(value) <= 253 or plain_text_problem(value):
        return ""
    return f"{kind}/{value}"


def _error_details() -> dict[str, Any]:
    """The answered error's code, message and reason, as the audit entry keeps them."""
    error = answered_error()
    if error is None:  # not our envelope: record the status alone
        return {}
    out: dict[str, Any] = {"error": error.code, "message": error.message[:_MAX_MESSAGE]}
    reason = error.details.get("reason")
    if isinstance(reason, str):
        out["reason"] = reason
    return out


async def audit_response(response: Response) -> Response:
    """after_request hook: write the entry of an audited request before the answer leaves.

    Skipped for requests that were not audited (no route, health/CA/CRL) and answers 429 (the
    request never reached the action).
    If the write fails the client gets 503 instead of the handler's answer and the failure is
    logged: no action is acknowledged without its entry.
    """
    pending: Pending | None = g.get("lab_audit")
    if pending is None or response.status_code == 429:
        return response
    context = ctx()
    if not context.config.audit_enabled:
        return response
    stored = pending.committed.stored if pending.committed is not None else None
    late = {k: v for k, v in pending.details.items() if pending.committed_details.get(k) != v}
    moved = pending.resource != pending.committed_resource
    if (
        stored is not None
        and response.status_code == pending.success_status
        and not late
        and not moved
    ):
        return response  # the entry committed with the change
    details: dict[str, Any] = {
        "method": request.method,
        "path": request.path,
        "status": response.status_code,
        **pending.details,
    }
    if stored is not None:
        details["follows"] = stored.seq
    rid = request_id()
    if rid is not None:
        details["request_id"] = rid
    if response.status_code >= 400:
        details.update(_error_details())
    resource = pending.resource
    rule = request.url_rule.rule if request.url_rule is not None else ""
    if rule in _ENROLL_SUBJECT and response.status_code != 413:
        resource = await _enroll_subject(rule) or resource
    try:
        await _record_request(
            context, pending, resource, response.status_code, request.remote_addr, details
        )
    except Exception:
        log.exception(
            "audit write failed: refusing %s %s (%s)", request.method, request.path, pending.action
        )
        return error_response(
            503,
            "unavailable",
            "the audit log could not be written, so the request is refused",
            {"reason": "audit_unavailable", "hint": "check labd's database; then retry"},
        )
    return response


@define
class RefusalLog:
    """Which refused WebSocket handshakes to audit: the first of each (identity, reason) per
    ``interval``. A revoked agent retrying for days then leaves one entry an hour, not one per
    attempt; every refusal is still counted in ``labd_auth_refusals_total``. Pure: the caller
    passes the time. At most ``limit`` keys are remembered (the oldest are forgotten)."""

    interval: float = REFUSAL_AUDIT_INTERVAL
    limit: int = 10_000
    _last: dict[tuple[str, str], float] = field(factory=dict)

    def should_audit(self, who: str, reason: str, now: float) -> bool:
        key = (who, reason)
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._last.pop(key, None)
        self._last[key] = now
        while len(self._last) > self.limit:
            del self._last[next(iter(self._last))]
        return True


async def audit_refused_handshake(response: ResponseTypes | None) -> ResponseTypes | None:
    """after_websocket hook: record a WebSocket handshake the access check refused (its
    handler never ran); a failed write is logged (it is refused anyway).

    Only refusals raised as a LabError count (not 429). Every one is counted by reason; repeats
    of one identity (or source address, when no certificate was read) and reason are audited
    at most once per ``REFUSAL_AUDIT_INTERVAL``.
    """
    pending: Pending | None = g.get("lab_audit")
    answer = answered_error()
    exc = answer.raised if answer is not None else None
    if pending is None or exc is None or exc.status == 429:
        return response
    context = ctx()
    reason = exc.details.get("reason") if isinstance(exc.details.get("reason"), str) else None
    context.metrics.auth_refusals.labels(reason=str(reason or exc.code)).inc()
    who: Principal | None = g.get("principal")
    key = who.subject if who is not None else f"addr/{websocket.remote_addr or '?'}"
    refusals: RefusalLog = current_app.extensions.setdefault("lab.ws_refusals", RefusalLog())
    if not refusals.should_audit(key, str(reason or exc.code), time.monotonic()):
        return response
    details: dict[str, Any] = {"path": websocket.path, "status": exc.status, "error": exc.code}
    details["message"] = exc.message
    if reason is not None:
        details["reason"] = reason
    try:
        await _record_request(
            context, pending, pending.resource, exc.status, websocket.remote_addr, details
        )
    except Exception:
        log.exception("audit write failed for a refused WebSocket %s", websocket.path)
    return response
