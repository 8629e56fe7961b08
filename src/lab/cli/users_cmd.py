"""labctl users: people who use labd (create with a one-time token, list, disable, enable)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

from cyclopts import App, Parameter

from lab.cli.output import OutputOpt

users_app = App(
    name="users", help="People who use labd: create, list, grant roles, disable, enable."
)

RoleOpt = Annotated[
    tuple[str, ...],
    Parameter(name=["--role", "-r"], help="A role to grant (repeat, or comma-separated)."),
]

COLUMNS = ("name", "roles", "disabled")
WIDE = ("created_at",)


def _path(name: str, *rest: str) -> str:
    from urllib.parse import quote

    return "/".join(["/api/users", quote(name, safe=""), *rest])


async def _post_action(name: str, action: str) -> Any:
    """``POST /api/users/NAME/ACTION`` with your identity; a refusal ends the command."""
    from lab.client.api import LabClient
    from lab.runtime.exits import handle

    with handle():
        async with LabClient.from_settings() as client:
            return await client.post(_path(name, action))


@users_app.command
async def create(
    name: str, /, *, role: RoleOpt = (), ttl: str = "24h", output: OutputOpt = ""
) -> None:
    """Create a user with roles and print a one-time token to log in with (shown only once).

    The token enrolls only this user: they run `labctl login --server URL --token TOKEN`.
    Example: labctl users create ann --role operator

    Parameters
    ----------
    name
        The user name: lowercase letters, digits, '_', '.', '-'.
    role
        Roles of the user (admin, operator, viewer or your own).
    ttl
        How long the token can be used: 30m, 24h, 7d.
    """
    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.client.durations import parse_duration
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    roles = [r.strip() for item in role for r in item.split(",") if r.strip()]
    with handle():
        seconds = parse_duration(ttl, field="ttl")
        async with LabClient.from_settings() as client:
            record = await client.post(
                "/api/users", {"name": name, "roles": roles, "token_ttl_seconds": seconds}
            )
    if is_data(fmt):
        emit(record, fmt)
        return
    print(record["token"])
    granted = ", ".join(record.get("roles") or []) or "-"
    print(
        f"user {record.get('name')} created with roles {granted};"
        f" the token above (expires {record.get('token_expires_at')}) will not be shown again."
        " Log in with: labctl login --server URL --token TOKEN",
        file=sys.stderr,
    )


@users_app.command(name="list")
async def list_(*, output: OutputOpt = "") -> None:
    """List users with their roles and whether they are disabled.

    Example: labctl users list -o wide
    """
    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        async with LabClient.from_settings() as client:
            items = (await client.get("/api/users")).get("items", [])
    if is_data(fmt):
        emit(items, fmt)
    elif not items:
        print("no users", file=sys.stderr)
    else:
        emit(items, fmt, columns=COLUMNS, wide=WIDE)


@users_app.command
async def disable(name: str, /) -> None:
    """Disable a user: revoke all its certificates and close its open sessions.

    Example: labctl users disable ann

    Parameters
    ----------
    name
        The user to disable.
    """
    record = await _post_action(name, "disable")
    revoked = record.get("revoked") or []
    print(f"user {name} disabled; {len(revoked)} certificate(s) revoked")


@users_app.command
async def enable(name: str, /) -> None:
    """Enable a disabled user; it needs a new user token (labctl tokens create) to log in.

    Example: labctl users enable ann

    Parameters
    ----------
    name
        The user to enable.
    """
    await _post_action(name, "enable")
    print(f"user {name} enabled")


async def _change_roles(name: str, action: str, role: tuple[str, ...]) -> list[str]:
    from lab.client.api import LabClient
    from lab.errors import Invalid
    from lab.runtime.exits import handle

    roles = [r.strip() for item in role for r in item.split(",") if r.strip()]
    with handle():
        if not roles:
            raise Invalid("give at least one --role", details={"fields": ["role"]})
        async with LabClient.from_settings() as client:
            record = await client.post(_path(name, action), {"roles": roles})
    return list(record.get("roles") or [])


@users_app.command
async def grant(name: str, /, *, role: RoleOpt = ()) -> None:
    """Give roles to a user (the only way an existing user gains roles).

    Example: labctl users grant ann --role operator

    Parameters
    ----------
    name
        The user.
    role
        Roles to give.
    """
    roles = await _change_roles(name, "grant", role)
    print(f"user {name} now has roles {', '.join(roles) or '-'}")


@users_app.command
async def ungrant(name: str, /, *, role: RoleOpt = ()) -> None:
    """Take roles away from a user.

    Example: labctl users ungrant ann --role operator

    Parameters
    ----------
    name
        The user.
    role
        Roles to take away.
    """
    roles = await _change_roles(name, "ungrant", role)
    print(f"user {name} now has roles {', '.join(roles) or '-'}")
