"""labctl label TYPE/NAME key=value... key-...: set and remove labels, kubectl style."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from lab.cli.output import OutputOpt
from lab.cli.targets import SelectorOpt
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


def split_words(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """Leading ``TYPE/NAME`` words (targets) and the label changes after them."""
    targets: list[str] = []
    for i, word in enumerate(words):
        if "=" in word or word.endswith("-") or "/" not in word:
            return targets, list(words[i:])
        targets.append(word)
    return targets, []


async def label(*words: str, selector: SelectorOpt = (), output: OutputOpt = "") -> None:
    """Set (KEY=VALUE) or remove (KEY-) labels of servers, named or selected with -l.

    Keys are NAME or PREFIX/NAME: NAME is up to 63 letters, digits, '-', '_', '.', starting
    and ending with a letter or digit; PREFIX is a DNS subdomain. Values follow NAME's rules
    (and may be empty). Servers named beside -l add to its matches. labd records each change
    in the audit log.

    Example: labctl label server/web1 role=worker zone-

    Parameters
    ----------
    words
        TYPE/NAME of the servers (e.g. server/web1), then KEY=VALUE to set and KEY- to remove.
    """
    from urllib.parse import quote

    from lab.cli.output import check_format
    from lab.cli.targets import check_selectors, fetch_servers, server_names
    from lab.client.api import LabClient
    from lab.errors import Invalid, NotFound
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    items = []
    with handle():
        resources, changes = split_words(words)
        names = server_names(resources)
        check_selectors(selector)
        if not names and not selector:
            raise Invalid(
                "name the servers to label (server/NAME) or select them with -l",
                details={"hint": "labctl label server/web1 role=worker zone-"},
            )
        set_, remove = parse_changes(changes)
        async with LabClient.from_settings() as client:
            if selector:
                targets = [
                    str(i["name"])
                    for i in await fetch_servers(client, names, selector, everything=False)
                ]
                if not targets:
                    raise NotFound(f"no server matches {' '.join(selector)!r}")
            else:
                targets = names
            for name in targets:
                items.append(
                    await client.patch(
                        f"/api/servers/{quote(name, safe='')}/labels",
                        json={"set": set_, "remove": remove},
                    )
                )
    if is_data(fmt):
        emit(items[0] if len(items) == 1 and not selector else items, fmt, kind="server")
        return
    for item in items:
        labels = item.get("labels") or {}
        shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"
        print(f"server/{item.get('name')} labeled: {shown}")
