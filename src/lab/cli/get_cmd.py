"""labctl get: list resources (``labctl get servers``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from cyclopts import App, Parameter

from lab.cli.output import OutputOpt

get_app = App(name="get", help="List resources: servers.")

LabelOpt = Annotated[
    tuple[str, ...],
    Parameter(
        name=["-l", "--label"],
        negative=(),
        help="Only servers with this label, KEY=VALUE (repeat).",
    ),
]

COLUMNS = ("name", "status", "labels", "age", "last-seen")
WIDE = ("version", "replica", "cert-expiry")


def _ago(value: Any, now: datetime) -> str | None:
    from lab.cli.durations import format_duration

    if not isinstance(value, str) or not value:
        return None
    return format_duration((now - datetime.fromisoformat(value)).total_seconds())


def _until(value: Any, now: datetime) -> str | None:
    from lab.cli.durations import format_duration

    if not isinstance(value, str) or not value:
        return None
    left = (datetime.fromisoformat(value) - now).total_seconds()
    return "expired" if left <= 0 else f"in {format_duration(left)}"


def server_row(item: dict[str, Any], now: datetime) -> dict[str, Any]:
    """One table row of ``labctl get servers`` from an item of ``GET /api/servers``."""
    return {
        "name": item.get("name"),
        "status": item.get("status"),
        "labels": item.get("labels") or {},
        "age": _ago(item.get("created_at"), now),
        "last-seen": _ago(item.get("last_seen"), now),
        "version": item.get("agent_version"),
        "replica": item.get("replica"),
        "cert-expiry": _until(item.get("cert_not_after"), now),
    }


@get_app.command
async def servers(
    *,
    label: LabelOpt = (),
    status: Annotated[str | None, Parameter(help="Only online or offline servers.")] = None,
    output: OutputOpt = "",
) -> None:
    """List servers with their presence and labels.

    The table shows NAME STATUS LABELS AGE LAST-SEEN; -o wide adds VERSION REPLICA
    CERT-EXPIRY; -o json/yaml print labd's items unchanged.

    Example: labctl get servers -l role=worker --status online -o wide
    """
    import sys
    from urllib.parse import urlencode

    from lab.cli.client import LabClient
    from lab.cli.errors import handle
    from lab.cli.output import check_format, emit, is_data
    from lab.errors import Invalid

    fmt = check_format(output)
    with handle():
        if status is not None and status not in ("online", "offline"):
            raise Invalid(
                f"--status {status!r} must be online or offline", details={"fields": ["status"]}
            )
        for pair in label:
            if "=" not in pair:
                raise Invalid(
                    f"label selector {pair!r} must be KEY=VALUE", details={"fields": ["label"]}
                )
        params: list[tuple[str, str]] = [("label", pair) for pair in label]
        if status is not None:
            params.append(("status", status))
        query = f"?{urlencode(params)}" if params else ""
        async with LabClient.from_settings() as client:
            body = await client.get(f"/api/servers{query}")
    items = body.get("items", [])
    if is_data(fmt):
        emit(items, fmt)
    elif not items:
        print("no servers", file=sys.stderr)
    else:
        now = datetime.now(UTC)
        emit([server_row(i, now) for i in items], fmt, columns=COLUMNS, wide=WIDE)


# The audit log is read with the same verb; its command lives beside labctl audit.
get_app.command(
    "lab.cli.audit_cmd:get_audit",
    name="audit",
    help="List audit entries: who did what, on what, with which result.\n\n"
    "Example: labctl get audit --user user/ann --since 10m -o json",
)
