"""labctl roles: roles and their allow/deny rules."""

from __future__ import annotations

from typing import Annotated, Any

from cyclopts import App, Parameter

from lab.cli.output import OutputOpt

roles_app = App(name="roles", help="Roles and their allow/deny rules (deny overrides allow).")

RULE_COLUMNS = ("effect", "action", "resource")


def _path(name: str, *rest: str) -> str:
    from urllib.parse import quote

    return "/".join(["/api/roles", quote(name, safe=""), *rest])


def role_rows(roles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": r.get("name"),
            "builtin": r.get("builtin"),
            "rules": len(r.get("permissions") or []),
            "description": r.get("description"),
        }
        for r in roles
    ]


def _print_role(role: dict[str, Any], fmt: str) -> None:
    from lab.runtime.output import emit, is_data

    if is_data(fmt):
        emit(role, fmt)
        return
    kind = "builtin" if role.get("builtin") else "custom"
    print(f"role {role.get('name')} ({kind}): {role.get('description') or '-'}")
    groups = role.get("kubernetes_groups") or []
    if groups:
        print(f"kubernetes groups: {', '.join(groups)}")
    rules = role.get("permissions") or []
    if rules:
        emit(rules, fmt, columns=RULE_COLUMNS)
    else:
        print("no rules: this role allows nothing")


@roles_app.command(name="list")
async def list_(*, output: OutputOpt = "") -> None:
    """List roles with their number of rules.

    Example: labctl roles list
    """
    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        async with LabClient.from_settings() as client:
            items = (await client.get("/api/roles")).get("items", [])
    if is_data(fmt):
        emit(items, fmt)
    else:
        emit(role_rows(items), fmt, columns=("name", "builtin", "rules", "description"))


@roles_app.command
async def describe(name: str, /, *, output: OutputOpt = "") -> None:
    """Show a role's rules in the order they were written.

    Example: labctl roles describe operator

    Parameters
    ----------
    name
        The role.
    """
    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.runtime.exits import handle

    fmt = check_format(output)
    with handle():
        async with LabClient.from_settings() as client:
            role = await client.get(_path(name))
    _print_role(role, fmt)


@roles_app.command
async def create(
    name: str,
    /,
    *,
    description: str = "",
    kubernetes_group: Annotated[
        list[str] | None, Parameter(name="--kubernetes-group", negative=())
    ] = None,
    output: OutputOpt = "",
) -> None:
    """Create an empty role (it allows nothing until you add rules with roles allow).

    Example: labctl roles create web-ops --description "exec on web servers"

    Parameters
    ----------
    name
        The role's name: lowercase letters, digits, '_', '.', '-'.
    description
        Free text shown by roles list.
    kubernetes_group
        A Kubernetes group labd's /k8s proxy impersonates for holders of the role (repeat it
        for several), e.g. system:masters.
    """
    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.runtime.exits import handle

    fmt = check_format(output)
    payload: dict[str, Any] = {"name": name, "description": description}
    if kubernetes_group:
        payload["kubernetes_groups"] = list(kubernetes_group)
    with handle():
        async with LabClient.from_settings() as client:
            role = await client.post("/api/roles", payload)
    _print_role(role, fmt)


@roles_app.command(name="kubernetes-groups")
async def kubernetes_groups(name: str, /, *groups: str, output: OutputOpt = "") -> None:
    """Set the Kubernetes groups a role maps to through /k8s (none given: clear them).

    Example: labctl roles kubernetes-groups web-ops lab:web-editors

    Parameters
    ----------
    name
        The role (a custom one: builtin roles are fixed).
    groups
        The groups, replacing the role's current ones.
    """
    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.runtime.exits import handle

    fmt = check_format(output)
    with handle():
        async with LabClient.from_settings() as client:
            role = await client.post(_path(name, "kubernetes-groups"), {"groups": list(groups)})
    _print_role(role, fmt)


@roles_app.command
async def delete(name: str, /) -> None:
    """Delete a custom role (refused while users hold it, and for builtin roles).

    Example: labctl roles delete web-ops

    Parameters
    ----------
    name
        The role.
    """
    from lab.client.api import LabClient
    from lab.runtime.exits import handle

    with handle():
        async with LabClient.from_settings() as client:
            await client.delete(_path(name))
    print(f"role {name} deleted")


async def _rule(effect: str, role: str, action: str, resource: str, remove: bool, fmt: str) -> None:
    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.runtime.exits import handle

    check_format(fmt)
    with handle():
        async with LabClient.from_settings() as client:
            path = _path(role, "rules", "remove") if remove else _path(role, "rules")
            updated = await client.post(
                path, {"effect": effect, "action": action, "resource": resource}
            )
    _print_role(updated, fmt)


@roles_app.command
async def allow(
    role: str, action: str, resource: str, /, *, remove: bool = False, output: OutputOpt = ""
) -> None:
    """Add a rule that allows ACTION on RESOURCE (``*`` matches anything), or remove it.

    Example: labctl roles allow web-ops 'exec:*' 'server/web-*'

    Parameters
    ----------
    role
        A custom role (builtin roles are restored at every start of labd).
    action
        An action pattern: servers:list, exec:*, *:*.
    resource
        A resource pattern: server/web-*, user/ann, *.
    remove
        Remove this rule instead of adding it.
    """
    await _rule("allow", role, action, resource, remove, output)


@roles_app.command
async def deny(
    role: str, action: str, resource: str, /, *, remove: bool = False, output: OutputOpt = ""
) -> None:
    """Add a rule that denies ACTION on RESOURCE; a deny beats every allow. Or remove it.

    Example: labctl roles deny web-ops 'exec:*' server/web-db

    Parameters
    ----------
    role
        A custom role.
    action
        An action pattern.
    resource
        A resource pattern.
    remove
        Remove this rule instead of adding it.
    """
    await _rule("deny", role, action, resource, remove, output)
