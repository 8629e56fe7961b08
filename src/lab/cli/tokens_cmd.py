"""labctl tokens: join tokens for agents and users (create, list, revoke)."""

from __future__ import annotations

import sys
from typing import Literal

from cyclopts import App

from lab.cli.output import OutputOpt

tokens_app = App(name="tokens", help="Join tokens that let agents and users enroll.")


COLUMNS = ("id", "kind", "bound_to", "roles", "uses", "max_uses", "expires_at", "revoked_at")
WIDE = ("reusable", "system_uuid", "serial", "created_at", "created_by", "description")


def bound_to(token: dict[str, object]) -> str:
    """What a token may enroll, in one cell: ``user/ann``, ``server/web1 (replace)``, ``any new
    server``."""
    if token.get("user"):
        return f"user/{token['user']}"
    if token.get("hostname"):
        return f"server/{token['hostname']}" + (" (replace)" if token.get("replace") else "")
    return "any new user" if token.get("kind") == "user" else "any new server"


@tokens_app.command
async def create(
    *,
    kind: Literal["agent", "user"],
    roles: str = "",
    ttl: str = "1h",
    reusable: bool = False,
    max_uses: int | None = None,
    description: str = "",
    user: str | None = None,
    hostname: str | None = None,
    system_uuid: str | None = None,
    serial: str | None = None,
    replace: bool = False,
    output: OutputOpt = "",
) -> None:
    """Create a join token and print its secret (shown only this once).

    A user token enrolls exactly one user (--user). An agent token without --hostname may
    only enroll a new server; --hostname binds it to one name, --system-uuid/--serial to the
    machine's hardware, and --replace (with --hostname) lets it take over an existing server.

    Example: labctl tokens create --kind user --user ann --roles operator --ttl 1h

    Parameters
    ----------
    kind
        agent (lab-agent enroll) or user (labctl login).
    roles
        Comma-separated roles for a user token, e.g. operator,viewer.
    ttl
        How long the token can be used: 30s, 10m, 1h, 7d.
    reusable
        Allow several enrollments with this token (until it expires or max-uses).
    max_uses
        Cap the number of enrollments of a reusable token.
    description
        Free text shown by labctl tokens list.
    user
        The one user a user token enrolls (required for --kind user).
    hostname
        The only server name an agent token enrolls.
    system_uuid
        The DMI system UUID the enrolling agent must report.
    serial
        The DMI serial number the enrolling agent must report.
    replace
        Let the agent token take over the existing server --hostname (its old certificates
        are revoked).
    """
    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.client.durations import parse_duration
    from lab.errors import Invalid
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        ttl_seconds = parse_duration(ttl, field="ttl")
        if max_uses is not None and max_uses < 1:
            raise Invalid("--max-uses must be at least 1", details={"fields": ["max_uses"]})
        body = {
            "kind": kind,
            "roles": [r.strip() for r in roles.split(",") if r.strip()],
            "ttl_seconds": ttl_seconds,
            "reusable": reusable,
            "max_uses": max_uses,
            "description": description,
            "user": user,
            "hostname": hostname,
            "system_uuid": system_uuid,
            "serial": serial,
            "replace": replace,
        }
        async with LabClient.from_settings() as client:
            record = await client.post("/api/tokens", body)
    if is_data(fmt):
        emit(record, fmt)
    else:
        print(record["token"])
        expiry = f"expires {record.get('expires_at')}"
        print(
            f"token {record.get('id')} ({kind} for {bound_to(record)}, {expiry}): the secret"
            " above will not be shown again",
            file=sys.stderr,
        )


@tokens_app.command(name="list")
async def list_(*, output: OutputOpt = "") -> None:
    """List join tokens (never their secrets).

    Example: labctl tokens list -o wide
    """
    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        async with LabClient.from_settings() as client:
            body = await client.get("/api/tokens")
    items = body.get("items", [])
    items = [{**t, "bound_to": bound_to(t)} for t in items]
    if is_data(fmt):
        emit(items, fmt)
    elif not items:
        print("no tokens", file=sys.stderr)
    else:
        emit(items, fmt, columns=COLUMNS, wide=WIDE)


@tokens_app.command
async def revoke(token_id: str, /) -> None:
    """Revoke a join token by id; it can no longer be used to enroll.

    Example: labctl tokens revoke 3f2a9c

    Parameters
    ----------
    token_id
        The token's id (the part before the dot, as in labctl tokens list).
    """
    from urllib.parse import quote

    from lab.client.api import LabClient
    from lab.runtime.exits import handle

    token_id = token_id.split(".", 1)[0]
    with handle():
        async with LabClient.from_settings() as client:
            record = await client.delete(f"/api/tokens/{quote(token_id, safe='')}")
    print(f"token {record.get('id', token_id)} revoked")
