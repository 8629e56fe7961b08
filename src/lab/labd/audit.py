"""Recording audited actions. labd writes the audit log itself (never the agent), and an
action is acknowledged only after its entry is durable: callers ``await record(...)`` before
they answer (or, for exec, before the remote process starts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lab.model import AuditEntry

if TYPE_CHECKING:
    from lab.labd.auth import Principal
    from lab.labd.context import LabdContext


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
) -> AuditEntry:
    """Append one entry and return it once durable (group commit). Raises if the write fails,
    so a caller that cannot audit refuses the action (fail closed)."""
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
    return await context.store.audit.append(entry)
