"""labctl get: the one read verb, kubectl style.

``get TYPE`` lists, ``get TYPE NAME...`` and ``get TYPE/NAME...`` show the named ones, for
servers, users, roles, tokens, certs and audit; ``-o table|wide|json|yaml|name|jsonpath=``;
``-l`` selects servers by label; ``--watch`` follows servers. The ``X list`` commands are the
older spelling of the same reads.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from attrs import frozen
from cyclopts import App, Parameter

from lab.cli.output import OutputOpt
from lab.cli.targets import SelectorOpt

get_app = App(
    name="get",
    help="Show resources: servers, users, roles, tokens, certs, clusters, artifacts, apps, "
    "audit.\n\n"
    "labctl get TYPE lists them; labctl get TYPE NAME... or TYPE/NAME... shows the named "
    "ones.\n\nExample: labctl get servers -l 'role=worker,zone!=a' -o wide",
)

NamesArg = Annotated[
    tuple[str, ...],
    Parameter(help="Names (or TYPE/NAME) to show; none lists every one.", show_default=False),
]
StatusOpt = Annotated[str | None, Parameter(help="Only online or offline servers.")]
WatchOpt = Annotated[
    bool,
    Parameter(
        name=["-w", "--watch"], negative=(), help="After the list, print servers as they change."
    ),
]

COLUMNS = ("name", "status", "labels", "age", "last-seen")
WIDE = ("version", "replica", "cert-expiry")
WATCH_INTERVAL = 2.0


def _ago(value: Any, now: datetime) -> str | None:
    from lab.client.durations import format_duration

    if not isinstance(value, str) or not value:
        return None
    return format_duration((now - datetime.fromisoformat(value)).total_seconds())


def _until(value: Any, now: datetime) -> str | None:
    from lab.client.durations import format_duration

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


def _check_status(status: str | None) -> None:
    from lab.errors import Invalid

    if status is not None and status not in ("online", "offline"):
        raise Invalid(
            f"--status {status!r} must be online or offline", details={"fields": ["status"]}
        )


def _print_servers(items: list[dict[str, Any]], fmt: str, *, header: bool = True) -> None:
    from lab.runtime.output import emit, is_data, table_lines

    if is_data(fmt):
        emit(items, fmt, kind="server")
        return
    now = datetime.now(UTC)
    rows = [server_row(i, now) for i in items]
    lines = table_lines(rows, fmt, columns=COLUMNS, wide=WIDE)
    print("\n".join(lines if header else lines[1:]))


@get_app.command(name=["servers", "server"])
async def servers(
    *names: str,
    selector: SelectorOpt = (),
    status: StatusOpt = None,
    watch: WatchOpt = False,
    output: OutputOpt = "",
) -> None:
    """List servers with their presence and labels, or the named ones.

    The table shows NAME STATUS LABELS AGE LAST-SEEN; -o wide adds VERSION REPLICA
    CERT-EXPIRY; -o json prints labd's items unchanged; -o yaml prints apply documents
    (kind Server, the labels) that labctl apply -f takes unchanged. Names given beside -l add to the
    selector's matches. --watch keeps printing servers whose state changes (Ctrl-C ends it).

    Example: labctl get servers -l 'role=worker,zone in (a,b)' --status online -o wide

    Parameters
    ----------
    names
        Servers to show (NAME or server/NAME); none lists every one.
    """
    from lab.cli.output import check_format
    from lab.cli.targets import fetch_servers, server_names
    from lab.client.api import LabClient
    from lab.runtime.exits import handle
    from lab.runtime.output import is_data

    fmt = check_format(output)
    if fmt == "yaml" and not watch:
        await export_documents("servers", names, selector=selector, status=status)
        return
    with handle():
        _check_status(status)
        wanted = server_names(names)
        async with LabClient.from_settings() as client:
            items = await fetch_servers(client, wanted, selector, status=status)
            if items or is_data(fmt):
                # json/yaml print [] for no match, as kubectl prints an empty list.
                _print_servers(items, fmt)
            elif not watch:
                print("no servers", file=sys.stderr)
            if watch:
                await _watch(client, items, fmt, wanted, selector, status)


def _state(item: dict[str, Any]) -> tuple[Any, ...]:
    labels = item.get("labels") or {}
    return (item.get("status"), tuple(sorted(labels.items())), item.get("agent_version"))


async def _watch(
    client: Any,
    first: list[dict[str, Any]],
    fmt: str,
    names: Sequence[str],
    selector: Sequence[str],
    status: str | None,
) -> None:
    """Print each server whose status, labels or version changed, or that came or went.

    A server that no longer matches (its labels or status changed, or it is gone from labd)
    prints ``server/NAME no longer matches`` in a table, and its last state with
    ``"gone": true`` in json/yaml.
    """
    import trio

    from lab.cli.targets import fetch_servers

    last = {str(i.get("name")): i for i in first}
    header = not first
    while True:
        await trio.sleep(WATCH_INTERVAL)
        items = await fetch_servers(client, names, selector, status=status, missing_ok=True)
        now = {str(i.get("name")): i for i in items}
        changed = [i for n, i in now.items() if n not in last or _state(last[n]) != _state(i)]
        gone = [last[n] for n in sorted(set(last) - set(now))]
        last = now
        if changed:
            _print_servers(changed, fmt, header=header)
            header = False
        if gone and fmt in ("table", "wide"):
            for item in gone:
                print(f"server/{item.get('name')} no longer matches")
        elif gone:
            _print_servers([{**item, "gone": True} for item in gone], fmt)
        sys.stdout.flush()


@frozen(kw_only=True)
class Kind:
    """A resource ``get`` lists from one labd route and filters by name on this side."""

    name: str
    path: str
    key: str = "name"
    columns: tuple[str, ...]
    wide: tuple[str, ...] = ()
    rows: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None
    # Several items share one name (an artifact's versions and arches): a name shows them all.
    grouped: bool = False


def _token_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from lab.cli.tokens_cmd import bound_to

    return [{**t, "bound_to": bound_to(t)} for t in items]


def _role_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from lab.cli.roles_cmd import role_rows

    return role_rows(items)


USERS = Kind(
    name="user", path="/api/users", columns=("name", "roles", "disabled"), wide=("created_at",)
)
ROLES = Kind(
    name="role",
    path="/api/roles",
    columns=("name", "builtin", "rules", "description"),
    rows=_role_rows,
)
TOKENS = Kind(
    name="token",
    path="/api/tokens",
    key="id",
    columns=("id", "kind", "bound_to", "roles", "uses", "max_uses", "expires_at", "revoked_at"),
    wide=("reusable", "system_uuid", "serial", "created_at", "created_by", "description"),
    rows=_token_rows,
)
CERTS = Kind(
    name="cert",
    path="/api/certs",
    key="serial",
    columns=("serial", "subject", "profile", "not_after", "revoked_at"),
    wide=("not_before",),
)


def _cluster_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from lab.cli.clusters_cmd import cluster_rows

    return cluster_rows(items)


CLUSTERS = Kind(
    name="cluster",
    path="/api/clusters",
    columns=("name", "ready", "version", "nodes", "origin", "age"),
    wide=("status", "api_server", "created_by"),
    rows=_cluster_rows,
)


def _artifact_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from lab.cli.artifacts_cmd import artifact_rows

    return artifact_rows(items)


ARTIFACTS = Kind(
    name="artifact",
    path="/api/artifacts",
    columns=("name", "version", "arch", "size", "sha256"),
    wide=("filename", "created_by", "created_at"),
    rows=_artifact_rows,
    grouped=True,
)
KINDS = {
    "server": None,
    "user": USERS,
    "role": ROLES,
    "token": TOKENS,
    "cert": CERTS,
    "cluster": CLUSTERS,
    "artifact": ARTIFACTS,
    "audit": None,
}
ALIASES = {
    "server": "server",
    "servers": "server",
    "user": "user",
    "users": "user",
    "role": "role",
    "roles": "role",
    "token": "token",
    "tokens": "token",
    "cert": "cert",
    "certs": "cert",
    "certificate": "cert",
    "certificates": "cert",
    "cluster": "cluster",
    "clusters": "cluster",
    "artifact": "artifact",
    "artifacts": "artifact",
    "audit": "audit",
}


async def export_documents(
    path_kind: str,
    names: Sequence[str],
    *,
    selector: Sequence[str] = (),
    status: str | None = None,
) -> None:
    """``-o yaml`` of servers, users and roles: apply documents (multi-document YAML) that
    ``labctl apply -f`` takes unchanged, so export then apply changes nothing."""
    from urllib.parse import quote

    from lab.apply.documents import dump_documents
    from lab.client.api import LabClient
    from lab.runtime.exits import handle

    with handle():
        wanted = [n.partition("/")[2] if "/" in n else n for n in names]
        async with LabClient.from_settings() as client:
            if path_kind == "servers" and (selector or status):
                from lab.cli.targets import fetch_servers

                found = await fetch_servers(client, wanted, selector, status=status)
                wanted = [str(i.get("name")) for i in found]
            if wanted:
                docs = [
                    await client.get(f"/api/apply/objects/{path_kind}/{quote(n, safe='')}")
                    for n in dict.fromkeys(wanted)
                ]
            else:
                docs = (await client.get(f"/api/apply/objects/{path_kind}")).get("items", [])
    sys.stdout.write(dump_documents(docs))


async def show_kind(kind: Kind, names: Sequence[str], output: str) -> None:
    """List ``kind`` (or the ``names`` of it, in that order) in ``output``."""
    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.errors import NotFound
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    if fmt == "yaml" and kind in (USERS, ROLES):
        await export_documents(f"{kind.name}s", names)
        return
    with handle():
        wanted = [n.partition("/")[2] if "/" in n else n for n in names]
        async with LabClient.from_settings() as client:
            items = (await client.get(kind.path)).get("items", [])
        if wanted:
            by_key = {str(i.get(kind.key)): i for i in items}
            missing = [n for n in wanted if n not in by_key]
            if missing:
                raise NotFound(
                    f"{kind.name}/{missing[0]} not found",
                    details={"hint": f"labctl get {kind.name}s"},
                )
            if kind.grouped:
                items = [i for i in items if str(i.get(kind.key)) in wanted]
            else:
                items = [by_key[n] for n in dict.fromkeys(wanted)]
    if fmt == "yaml" and kind is CLUSTERS:
        from lab.apply.documents import cluster_document, dump_documents

        sys.stdout.write(dump_documents([cluster_document(i) for i in items]))
        return
    if is_data(fmt):
        named = [{**i, "name": i.get(kind.key)} for i in items] if fmt == "name" else items
        emit(named, fmt, kind=kind.name)
        return
    rows = kind.rows(items) if kind.rows is not None else items
    if not rows:
        print(f"no {kind.name}s", file=sys.stderr)
    else:
        emit(rows, fmt, columns=kind.columns, wide=kind.wide)


@get_app.command(name=["users", "user"])
async def users(*names: str, output: OutputOpt = "") -> None:
    """List users with their roles and whether they are disabled, or the named ones.

    -o yaml prints apply documents (kind User) that labctl apply -f takes unchanged.

    Example: labctl get users ann -o yaml

    Parameters
    ----------
    names
        Users to show (NAME or user/NAME).
    """
    await show_kind(USERS, names, output)


@get_app.command(name=["roles", "role"])
async def roles(*names: str, output: OutputOpt = "") -> None:
    """List roles with their number of rules, or the named ones (-o yaml shows the rules).

    -o yaml prints apply documents (kind Role) that labctl apply -f takes unchanged.

    Example: labctl get roles operator -o yaml

    Parameters
    ----------
    names
        Roles to show (NAME or role/NAME).
    """
    await show_kind(ROLES, names, output)


@get_app.command(name=["tokens", "token"])
async def tokens(*names: str, output: OutputOpt = "") -> None:
    """List join tokens (never their secrets), or the ones with these ids.

    Example: labctl get tokens -o wide

    Parameters
    ----------
    names
        Token ids to show (ID or token/ID).
    """
    await show_kind(TOKENS, names, output)


@get_app.command(name=["certs", "cert"])
async def certs(*names: str, output: OutputOpt = "") -> None:
    """List issued certificates, or the ones with these serials.

    Example: labctl get certs -o jsonpath='{.subject}'

    Parameters
    ----------
    names
        Certificate serials to show (SERIAL or cert/SERIAL).
    """
    await show_kind(CERTS, names, output)


@get_app.command(name=["clusters", "cluster"])
async def clusters(*names: str, output: OutputOpt = "") -> None:
    """List Kubernetes clusters; READY is what each API server answers now.

    READY is Ready when /version answers and every node is Ready (NotReady, Refused or
    Unreachable otherwise); NODES is Ready/total. -o wide adds STATUS API_SERVER CREATED_BY.
    Never prints a kubeconfig (labctl clusters kubeconfig does, with clusters:read-credentials).
    -o yaml prints apply documents (kind Cluster) that labctl apply -f takes unchanged.

    Example: labctl get clusters -o wide

    Parameters
    ----------
    names
        Clusters to show (NAME or cluster/NAME).
    """
    await show_kind(CLUSTERS, names, output)


@get_app.command(name=["apps", "app"])
async def apps(
    *names: str,
    cluster: Annotated[str, Parameter(name=["--cluster", "-c"], help="Only this cluster.")] = "",
    namespace: Annotated[
        str, Parameter(name=["-n", "--namespace"], help="Only this namespace.")
    ] = "",
    output: OutputOpt = "",
) -> None:
    """List app releases (the newest revision of each) you may read: status, module, revision.

    Example: labctl get apps --cluster home -o wide

    Parameters
    ----------
    names
        Releases to show (NAME or app/NAME).
    """
    from lab.cli.apps_cmd import get_apps

    await get_apps(names, cluster, namespace, output)


@get_app.command(name=["artifacts", "artifact"])
async def artifacts(*names: str, output: OutputOpt = "") -> None:
    """List artifacts (every version and arch of each), or those of the named ones.

    The table shows NAME VERSION ARCH SIZE SHA256 (the first 12 digits; -o json has all);
    -o wide adds FILENAME CREATED_BY CREATED_AT.

    Example: labctl get artifacts k3s -o wide

    Parameters
    ----------
    names
        Artifact names to show (NAME or artifact/NAME).
    """
    await show_kind(ARTIFACTS, names, output)


@get_app.default
async def by_resource(
    *resources: str,
    selector: SelectorOpt = (),
    output: OutputOpt = "",
) -> None:
    """Show resources named TYPE/NAME, e.g. server/web1 user/ann (one type at a time).

    Example: labctl get server/web1 -o jsonpath='{.status}'

    Parameters
    ----------
    resources
        TYPE/NAME words: server/web1, user/ann, role/admin, token/ID, cert/SERIAL.
    """
    from lab.errors import Invalid
    from lab.runtime.exits import handle

    types = ", ".join(f"{t}s" for t in KINDS)
    with handle():
        if not resources:
            raise Invalid(
                "name a resource type, or TYPE/NAME",
                details={"hint": f"labctl get TYPE with TYPE one of {types}"},
            )
        kinds = set()
        for word in resources:
            kind_text, slash, name = word.partition("/")
            kind = ALIASES.get(kind_text.lower())
            if kind is None or not slash or not name:
                raise Invalid(
                    f"unknown resource {word!r}",
                    details={"hint": f"TYPE/NAME or TYPE NAME..., with TYPE one of {types}"},
                )
            kinds.add(kind)
        if len(kinds) > 1:
            raise Invalid(
                f"give one resource type at a time, not {' and '.join(sorted(kinds))}",
                details={"hint": "run labctl get once per type"},
            )
        (kind,) = kinds
    if kind == "audit":
        from lab.cli.audit_cmd import get_audit

        await get_audit(*resources, output=output)
    elif kind == "server":
        await servers(*resources, selector=selector, output=output)
    else:
        found = KINDS[kind]
        assert found is not None
        await show_kind(found, resources, output)


# The audit log is read with the same verb; its command lives beside labctl audit.
get_app.command(
    "lab.cli.audit_cmd:get_audit",
    name="audit",
    help="List audit entries: who did what, on what, with which result.\n\n"
    "Example: labctl get audit --user user/ann --since 10m -o json",
)
