"""Which servers a command is about: names and ``-l`` selectors, the same for every command.

``-l`` takes kubectl's grammar (:mod:`lab.model.labels`): ``-l 'a=1,b!=2,c in (x,y),!d,e'``;
repeated ``-l`` are ANDed; names given beside a selector add to its matches (the union).
labd filters by the selector (``GET /api/servers?selector=``); names are read one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, urlencode

from cyclopts import Parameter

from lab.errors import NotFound

if TYPE_CHECKING:
    from lab.client.api import LabClient

SelectorOpt = Annotated[
    tuple[str, ...],
    Parameter(
        name=["-l", "--selector"],
        negative=(),
        consume_multiple=False,
        help="Label selector: 'a=1,b!=2,c in (x,y),!d,e' (repeat -l to AND; names given "
        "too are added).",
    ),
]


def check_selectors(selectors: Sequence[str]) -> str:
    """The selectors ANDed into one string for labd; Invalid (exit 2) when one is malformed.

    Checked here too so a typo fails before any request, with the same words labd would use.
    """
    from lab.model.labels import parse_selectors

    return str(parse_selectors(selectors)) if selectors else ""


async def fetch_servers(
    client: LabClient,
    names: Sequence[str],
    selectors: Sequence[str],
    *,
    status: str | None = None,
    everything: bool = True,
    missing_ok: bool = False,
) -> list[dict[str, Any]]:
    """The servers named plus those the selectors match, sorted by name, without duplicates.

    With neither names nor selectors: every server when ``everything``, else none. A name
    that does not exist raises :class:`lab.errors.NotFound` naming it, unless ``missing_ok``
    (then it is left out).
    """
    selector = check_selectors(selectors)
    found: dict[str, dict[str, Any]] = {}
    if selector or (everything and not names):
        params: list[tuple[str, str]] = [("selector", selector)] if selector else []
        if status is not None:
            params.append(("status", status))
        query = f"?{urlencode(params)}" if params else ""
        body = await client.get(f"/api/servers{query}")
        for item in body.get("items", []):
            found[str(item.get("name"))] = item
    for name in names:
        if name in found:
            continue
        try:
            item = await client.get(f"/api/servers/{quote(name, safe='')}")
        except NotFound:
            if missing_ok:
                continue
            raise
        if status is None or item.get("status") == status:
            found[name] = item
    return [found[name] for name in sorted(found)]


def server_names(words: Sequence[str]) -> list[str]:
    """``web1``, ``server/web1`` or ``servers/web1`` as names (Invalid for another type)."""
    from lab.cli.resources import parse_resource

    names = []
    for word in words:
        if "/" in word:
            _, name = parse_resource(word, allowed=("server",))
        else:
            name = word
        names.append(name)
    return names


async def resolve_names(names: Sequence[str], selectors: Sequence[str]) -> list[str]:
    """The names of the servers named plus those the selectors match (asks labd), sorted.

    Raises :class:`lab.errors.NotFound` when nothing is named and the selectors match none.
    """
    from lab.client.api import LabClient
    from lab.errors import NotFound

    async with LabClient.from_settings() as client:
        items = await fetch_servers(client, names, selectors, everything=False)
    if not items:
        raise NotFound(
            f"no server matches {' and '.join(selectors)}",
            details={"hint": "labctl get servers shows every server and its labels"},
        )
    return [str(i["name"]) for i in items]
