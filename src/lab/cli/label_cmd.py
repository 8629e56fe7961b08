"""labctl label TYPE/NAME key=value... key-...: set and remove labels, kubectl style."""

from __future__ import annotations

from collections.abc import Iterable

from lab.cli.output import OutputOpt
from lab.errors import Invalid


def parse_changes(args: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """``key=value`` sets, ``key-`` removes; anything else (or nothing) is Invalid.

    Syntax of keys and values is labd's to check; this only splits the arguments.
    """
    set_: dict[str, str] = {}
    remove: list[str] = []
    for arg in args:
        if "=" in arg:
            key, _, value = arg.partition("=")
            if not key:
                raise Invalid(f"label {arg!r} has no key", details={"fields": ["labels"]})
            set_[key] = value
        elif arg.endswith("-") and len(arg) > 1:
            remove.append(arg[:-1])
        else:
            raise Invalid(
                f"label change {arg!r} must be KEY=VALUE or KEY-",
                details={
                    "fields": ["labels"],
                    "hint": "labctl label server/web1 role=worker zone-",
                },
            )
    if not set_ and not remove:
        raise Invalid(
            "no label changes given",
            details={"fields": ["labels"], "hint": "labctl label server/web1 role=worker zone-"},
        )
    return set_, remove


async def label(resource: str, /, *changes: str, output: OutputOpt = "") -> None:
    """Set (KEY=VALUE) or remove (KEY-) labels of a resource.

    Keys are NAME or PREFIX/NAME: NAME is up to 63 letters, digits, '-', '_', '.', starting
    and ending with a letter or digit; PREFIX is a DNS subdomain. Values follow NAME's rules
    (and may be empty). labd records the change in the audit log.

    Example: labctl label server/web1 role=worker zone-

    Parameters
    ----------
    resource
        TYPE/NAME, e.g. server/web1.
    changes
        KEY=VALUE to set, KEY- to remove.
    """
    from urllib.parse import quote

    from lab.cli.client import LabClient
    from lab.cli.errors import handle
    from lab.cli.output import check_format, emit, is_data
    from lab.cli.resources import parse_resource

    fmt = check_format(output)
    with handle():
        kind, name = parse_resource(resource, allowed=("server",))
        set_, remove = parse_changes(changes)
        async with LabClient.from_settings() as client:
            response = await client.request(
                "PATCH",
                f"/api/servers/{quote(name, safe='')}/labels",
                json={"set": set_, "remove": remove},
            )
            item = response.json()
    if is_data(fmt):
        emit(item, fmt)
    else:
        labels = item.get("labels") or {}
        shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"
        print(f"{kind}/{name} labeled: {shown}")
