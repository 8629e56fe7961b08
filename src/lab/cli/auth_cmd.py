"""labctl auth: ask RBAC (can-i about yourself or another user, explain a decision)."""

from __future__ import annotations

from typing import Annotated, Any

from cyclopts import App, Parameter

from lab.cli.output import OutputOpt

auth_app = App(name="auth", help="Ask RBAC: may I (or someone) do this, and which rule decides.")


def _rule_text(rule: dict[str, Any] | None) -> str:
    if not rule:
        return "no rule"
    return f"{rule.get('role')}: {rule.get('effect')} {rule.get('action')} {rule.get('resource')}"


@auth_app.command(name="can-i")
async def can_i(
    action: str,
    resource: str,
    /,
    *,
    as_: Annotated[str | None, Parameter(name="--as", help="Ask about this user instead.")] = None,
    output: OutputOpt = "",
) -> None:
    """Whether you (or --as USER) may do ACTION on RESOURCE: prints yes or no.

    Exits 0 for yes and 3 for no, so scripts can test it.
    Example: labctl auth can-i exec:run server/web1 --as ann

    Parameters
    ----------
    action
        The action, e.g. servers:list, exec:run, users:create.
    resource
        The resource, e.g. server/web1, user/ann.
    """
    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.runtime.exits import EXIT_DENIED, handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        async with LabClient.from_settings() as client:
            if as_ is None:
                params = {"action": action, "resource": resource}
                answer = await client.get("/api/auth/can-i", params=params)
            else:
                params = {"user": as_, "action": action, "resource": resource}
                answer = await client.get("/api/auth/explain", params=params)
    allowed = bool(answer.get("allowed"))
    if is_data(fmt):
        emit(answer, fmt)
    else:
        print("yes" if allowed else f"no ({answer.get('reason')})")
    if not allowed:
        raise SystemExit(EXIT_DENIED)


@auth_app.command
async def explain(user: str, action: str, resource: str, /, *, output: OutputOpt = "") -> None:
    """Show every rule of USER's roles that matches ACTION on RESOURCE, and which one decided.

    Deny overrides allow; when nothing matches, the answer is no.
    Example: labctl auth explain ann exec:run server/db1

    Parameters
    ----------
    user
        The user name.
    action
        The action, e.g. exec:run.
    resource
        The resource, e.g. server/db1.
    """
    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        async with LabClient.from_settings() as client:
            params = {"user": user, "action": action, "resource": resource}
            answer = await client.get("/api/auth/explain", params=params)
    if is_data(fmt):
        emit(answer, fmt)
        return
    verdict = "ALLOWED" if answer.get("allowed") else "DENIED"
    roles = ", ".join(answer.get("roles") or []) or "none"
    print(f"{verdict}: user {user} (roles: {roles}) {action} on {resource}")
    matched = answer.get("matched") or []
    if matched:
        decided = answer.get("decided_by")
        rows = [{**m, "decides": "<-" if m == decided else ""} for m in matched]
        emit(rows, fmt, columns=("role", "effect", "action", "resource", "decides"))
    print(f"decided by: {_rule_text(answer.get('decided_by'))} ({answer.get('reason')})")
