"""labctl clusters: k3s clusters labd creates and runs through the agents, and existing ones
imported from a kubeconfig (docs/clusters.md).

``import`` records an existing cluster and ``kubeconfig`` reads its credentials back; every
other command but ``describe`` starts a recorded operation and, unless ``--no-wait``, follows
its steps until it ends; a failed operation prints the failed step and how to resume, exit 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from cyclopts import App, Parameter

from lab.cli.output import OutputOpt
from lab.cli.targets import SelectorOpt

if TYPE_CHECKING:
    from lab.client.api import LabClient

clusters_app = App(
    name="clusters",
    help="Kubernetes clusters: create k3s on enrolled servers, day-2 operations, import one.",
)

COLUMNS = ("name", "ready", "version", "nodes", "origin", "age")
WIDE = ("status", "api_server", "created_by")


def cluster_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows of ``labctl get clusters``: READY is the live answer of the API server."""
    from datetime import UTC, datetime

    from lab.client.durations import format_duration

    now = datetime.now(UTC)
    rows = []
    for item in items:
        health = item.get("health") or {}
        created = item.get("created_at")
        age = (now - datetime.fromisoformat(created)).total_seconds() if created else None
        rows.append(
            {
                "name": item.get("name"),
                "ready": health.get("state", "-"),
                "version": health.get("version") or item.get("version") or "-",
                "nodes": f"{health.get('nodes_ready', 0)}/{health.get('nodes', 0)}"
                if health.get("nodes")
                else "-",
                "origin": item.get("origin"),
                "age": format_duration(age) if age is not None else "-",
                "status": item.get("status"),
                "api_server": item.get("api_server"),
                "created_by": item.get("created_by"),
            }
        )
    return rows


NoWait = Annotated[
    bool, Parameter(name="--no-wait", negative=(), help="Return once the operation is recorded.")
]
POLL = 0.5


def _node(word: str) -> str:
    from lab.errors import Invalid

    kind, sep, name = word.partition("/")
    if not sep:
        kind, name = "server", word
    if kind != "server" or not name or "/" in name:
        raise Invalid(f"{word!r} must be server/NAME", details={"fields": ["node"]})
    return name


def step_line(step: dict[str, Any], total: int) -> str:
    where = f" server/{step['node']}" if step.get("node") else ""
    line = f"[{step['seq'] + 1}/{total}] {step['name']}{where}: {step['status']}"
    if step.get("error"):
        line += f" ({step['error']})"
    return line


def render_op(op: dict[str, Any]) -> str:
    """An operation and its steps, one line each (``labctl clusters describe``)."""
    from lab.runtime.output import terminal_text

    steps = op.get("steps") or []
    lines = [
        f"{'Operation:':<12}{op['kind']} {op['id']} ({op['status']})",
        f"{'Requested:':<12}{op.get('created_at')} by {op.get('requested_by') or '-'}",
        f"{'Ended:':<12}{op.get('ended_at') or '-'}",
    ]
    if op.get("error"):
        lines.append(f"{'Error:':<12}{op['error']}")
    lines.append("Steps:")
    lines += [f"  {step_line(s, len(steps))}" for s in steps]
    return "\n".join(terminal_text(line) for line in lines)


async def follow(client: LabClient, op: dict[str, Any], *, quiet: bool = False) -> dict[str, Any]:
    """Poll the operation until it ends, printing each step as it changes state."""
    import trio

    seen: dict[int, str] = {}
    path = f"/api/clusters/{op['cluster']}/operations/{op['id']}"
    while True:
        total = len(op.get("steps") or [])
        for step in op.get("steps") or []:
            if seen.get(step["seq"]) != step["status"] and step["status"] != "pending":
                seen[step["seq"]] = step["status"]
                if not quiet:
                    print(step_line(step, total), flush=True)
        if op["status"] in ("succeeded", "failed"):
            return op
        await trio.sleep(POLL)
        op = dict(await client.get(path))


async def _start(path: str, body: dict[str, Any], *, no_wait: bool, output: str, verb: str) -> None:
    import sys

    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        async with LabClient.from_settings() as client:
            op = dict(await client.post(path, json=body))
            if not no_wait:
                op = await follow(client, op, quiet=is_data(fmt))
    if is_data(fmt):
        emit(op, fmt)
    elif no_wait:
        print(f"cluster {op['cluster']}: {verb} started (operation {op['id']})")
    elif op["status"] == "succeeded":
        print(f"cluster {op['cluster']}: {verb} done")
    if op["status"] == "failed":
        print(f"error: {op['error']}", file=sys.stderr)
        raise SystemExit(1)


@clusters_app.command
async def create(
    name: str,
    /,
    *,
    server: Annotated[
        tuple[str, ...], Parameter(help="server/NAME (repeat; first: cluster-init).")
    ],
    agent: Annotated[
        tuple[str, ...], Parameter(help="server/NAME joining as agent (repeat).")
    ] = (),
    selector: SelectorOpt = (),
    version: str = "v1.31.4+k3s1",
    cni: Literal["flannel", "cilium", "none"] = "flannel",
    datastore: str = "embedded-etcd",
    allow_even: bool = False,
    api_address: str = "",
    api_port: int = 6443,
    cluster_cidr: str = "10.42.0.0/16",
    service_cidr: str = "10.43.0.0/16",
    disable: tuple[str, ...] = (),
    no_wait: NoWait = False,
    output: OutputOpt = "",
) -> None:
    """Create a k3s cluster on enrolled servers, through their agents.

    Preflight on every node first (nothing changes if one fails), then the first server with
    cluster-init, the other servers one at a time, the agents; each waits Ready.

    Example: labctl clusters create lab1 --server server/cp1 --agent server/w1 -l role=worker

    Parameters
    ----------
    name
        The cluster's name (a DNS label).
    version
        The k3s version; an artifact ``k3s`` of it must exist per node architecture.
    cni
        flannel (k3s's own), cilium (flannel off, kube-proxy off) or none.
    datastore
        embedded-etcd, sqlite (one server) or an endpoint URL (postgres://..., kept sealed).
    allow_even
        Accept an even number of embedded-etcd servers.
    api_address
        Host name or address kubeconfigs and joining nodes use (default: the first server).
    api_port
        The API server's port (k3s https-listen-port).
    cluster_cidr
        Pod network.
    service_cidr
        Service network.
    disable
        A packaged component to leave out: traefik, servicelb, local-storage, metrics-server,
        coredns (repeat).
    """
    from lab.cli.targets import check_selectors, fetch_servers
    from lab.client.api import LabClient
    from lab.runtime.exits import handle

    agents = [_node(a) for a in agent]
    with handle():
        servers = [_node(s) for s in server]
        if selector:
            check_selectors(selector)
            async with LabClient.from_settings() as client:
                found = await fetch_servers(client, [], selector, everything=False)
            agents += [str(i["name"]) for i in found if i["name"] not in (*servers, *agents)]
    body = {
        "servers": servers,
        "agents": agents,
        "version": version,
        "cni": cni,
        "datastore": datastore,
        "allow_even": allow_even,
        "api_address": api_address,
        "api_port": api_port,
        "cluster_cidr": cluster_cidr,
        "service_cidr": service_cidr,
        "disable": list(disable),
    }
    await _start(
        f"/api/clusters/{name}/create", body, no_wait=no_wait, output=output, verb="create"
    )


@clusters_app.command(name="add-node")
async def add_node(
    name: str,
    node: str,
    /,
    *,
    role: Literal["agent", "server"] = "agent",
    no_wait: NoWait = False,
    output: OutputOpt = "",
) -> None:
    """Join an enrolled server to the cluster (preflight, stage, configure, start, Ready).

    Example: labctl clusters add-node lab1 server/w9 --role agent

    Parameters
    ----------
    name
        The cluster's name.
    node
        server/NAME.
    role
        agent or server.
    """
    from lab.runtime.exits import handle

    with handle():
        body = {"node": _node(node), "role": role}
    await _start(
        f"/api/clusters/{name}/nodes", body, no_wait=no_wait, output=output, verb="add-node"
    )


@clusters_app.command(name="remove-node")
async def remove_node(
    name: str, node: str, /, *, no_wait: NoWait = False, output: OutputOpt = ""
) -> None:
    """Cordon and drain a node, remove k3s from it and its Node from the cluster.

    Example: labctl clusters remove-node lab1 server/w9

    Parameters
    ----------
    name
        The cluster's name.
    node
        server/NAME.
    """
    from lab.client.api import LabClient
    from lab.runtime.exits import handle

    with handle():
        path = f"/api/clusters/{name}/nodes/{_node(node)}"
        async with LabClient.from_settings() as client:
            op = dict(await client.delete(path))
    await _followed(op, no_wait=no_wait, output=output, verb="remove-node")


async def _followed(op: dict[str, Any], *, no_wait: bool, output: str, verb: str) -> None:
    import sys

    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    if not no_wait:
        with handle():
            async with LabClient.from_settings() as client:
                op = await follow(client, op, quiet=is_data(fmt))
    if is_data(fmt):
        emit(op, fmt)
    else:
        print(f"cluster {op['cluster']}: {verb} {'started' if no_wait else op['status']}")
    if op["status"] == "failed":
        print(f"error: {op['error']}", file=sys.stderr)
        raise SystemExit(1)


@clusters_app.command
async def upgrade(
    name: str, /, *, version: str, no_wait: NoWait = False, output: OutputOpt = ""
) -> None:
    """Upgrade k3s: servers one at a time (cordon, drain, new binary, restart, Ready,
    uncordon), then agents.

    Example: labctl clusters upgrade lab1 --version v1.32.1+k3s1

    Parameters
    ----------
    name
        The cluster's name.
    version
        The k3s version to run; its artifact must exist.
    """
    await _start(
        f"/api/clusters/{name}/upgrade",
        {"version": version},
        no_wait=no_wait,
        output=output,
        verb="upgrade",
    )


@clusters_app.command
async def delete(
    name: str,
    /,
    *,
    keep_data: bool = False,
    force: bool = False,
    no_wait: NoWait = False,
    output: OutputOpt = "",
) -> None:
    """Delete a cluster labd created: k3s removed from every node (agents first), then the
    cluster and its secrets forgotten. An imported cluster is only forgotten (its nodes are
    not labd's to change).

    Example: labctl clusters delete lab1 --keep-data

    Parameters
    ----------
    name
        The cluster's name.
    keep_data
        Leave /var/lib/rancher/k3s on the nodes.
    force
        Skip nodes whose agent cannot be reached (a machine gone for good); labd still
        forgets the cluster.
    """
    from urllib.parse import quote

    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.errors import NotFound
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        async with LabClient.from_settings() as client:
            try:
                path = f"/api/clusters/{quote(name, safe='')}"
                record = dict(await client.get(path, params={"live": "0"}))
            except NotFound:
                record = {}
            if record.get("origin") == "imported":
                gone = dict(await client.delete(f"/api/clusters/{quote(name, safe='')}"))
                if is_data(fmt):
                    emit(gone, fmt)
                else:
                    print(f"cluster {name}: forgotten (imported: its nodes were not changed)")
                return
    await _start(
        f"/api/clusters/{name}/delete",
        {"keep_data": keep_data, "force": force},
        no_wait=no_wait,
        output=output,
        verb="delete",
    )


@clusters_app.command
async def resume(name: str, /, *, no_wait: NoWait = False, output: OutputOpt = "") -> None:
    """Run the cluster's failed operation again from its failed step.

    Example: labctl clusters resume lab1

    Parameters
    ----------
    name
        The cluster's name.
    """
    await _start(f"/api/clusters/{name}/resume", {}, no_wait=no_wait, output=output, verb="resume")


@clusters_app.command
async def describe(name: str, /, *, output: OutputOpt = "") -> None:
    """Show the cluster's last operation with every step, and the operations before it.

    Example: labctl clusters describe lab1 -o json

    Parameters
    ----------
    name
        The cluster's name.
    """
    await describe_cluster(name, output)


async def describe_cluster(name: str, output: str) -> None:
    """``labctl describe cluster/NAME`` and ``labctl clusters describe NAME``."""
    from urllib.parse import quote

    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.errors import NotFound
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        quoted = quote(name, safe="")
        async with LabClient.from_settings() as client:
            try:
                record: dict[str, Any] | None = dict(await client.get(f"/api/clusters/{quoted}"))
            except NotFound:
                record = None
            ops = list((await client.get(f"/api/clusters/{quoted}/operations"))["items"])
        if record is None and not ops:
            raise NotFound(f"cluster {name!r} not found", details={"resource": f"cluster/{name}"})
    if is_data(fmt):
        emit({"cluster": record, "operations": ops}, fmt)
        return
    print(render_cluster(name, record, ops))


def health_lines(record: dict[str, Any]) -> list[str]:
    """What the API server answers now (``GET /api/clusters/NAME``'s ``health``), who made it."""
    health = record.get("health") or {}
    lines = []
    if health:
        state = str(health.get("state", "-"))
        if health.get("message"):
            state += f" ({health['message']})"
        lines.append(f"{'Ready:':<12}{state}")
        if health.get("nodes"):
            lines.append(f"{'Nodes:':<12}{health.get('nodes_ready', 0)} of {health['nodes']} Ready")
    lines.append(f"{'Created:':<12}{record.get('created_at')} by {record.get('created_by') or '-'}")
    return lines


def render_cluster(name: str, record: dict[str, Any] | None, ops: Sequence[dict[str, Any]]) -> str:
    from lab.runtime.output import terminal_text

    out = [f"{'Name:':<12}{name}"]
    if record is not None:
        for key in ("status", "origin", "api_server", "version"):
            if record.get(key):
                out.append(
                    terminal_text(f"{key.replace('_', ' ').capitalize() + ':':<12}{record[key]}")
                )
        out += [terminal_text(line) for line in health_lines(record)]
    if ops:
        params = ops[0].get("params") or {}
        spec = params.get("after") or params.get("spec") or {}
        out.append(f"{'Servers:':<12}{', '.join(spec.get('servers') or []) or '-'}")
        out.append(f"{'Agents:':<12}{', '.join(spec.get('agents') or []) or '-'}")
        out.append(render_op(ops[0]))
        if len(ops) > 1:
            out.append("Earlier operations:")
            out += [
                terminal_text(f"  {o['kind']} {o['id']} {o['status']} {o.get('created_at')}")
                for o in ops[1:]
            ]
    return "\n".join(out)


@clusters_app.command(name="import")
async def import_cluster(
    name: str,
    /,
    *,
    kubeconfig: Annotated[Path, Parameter(help="The kubeconfig file to import.")],
    context: Annotated[
        str | None, Parameter(help="The context to import (default: its current-context).")
    ] = None,
    output: OutputOpt = "",
) -> None:
    """Import an existing cluster: labd checks its /version and keeps the kubeconfig sealed.

    Only the chosen context is sent, with every file it names (CA, client certificate and
    key, token file) read here and inlined; exec and auth-provider plugins are refused. Needs
    clusters:import on cluster/NAME.

    Example: labctl clusters import lab --kubeconfig ~/.kube/config --context lab-admin

    Parameters
    ----------
    name
        The cluster's name in labd (lowercase letters, digits, '-').
    """
    from lab.cli.output import check_format
    from lab.client.api import LabClient
    from lab.errors import Invalid
    from lab.kube import flatten_kubeconfig
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    fmt = check_format(output)
    with handle():
        path = kubeconfig.expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise Invalid(
                f"cannot read {path}: {reason}", details={"fields": ["kubeconfig"]}
            ) from None
        flat = flatten_kubeconfig(text, context, base_dir=path.parent, name=name)
        async with LabClient.from_settings() as client:
            item = await client.post(
                "/api/clusters/import", json={"name": name, "kubeconfig": flat}
            )
    if is_data(fmt):
        emit(item, fmt, kind="cluster")
    else:
        print(f"cluster/{item['name']} imported: {item['version']} at {item['api_server']}")


@clusters_app.command
async def kubeconfig(
    name: str,
    /,
    *,
    file: Annotated[
        Path | None, Parameter(help="Write it to this file (mode 0600) instead of stdout.")
    ] = None,
) -> None:
    """Print the cluster's kubeconfig (its credentials): needs clusters:read-credentials.

    labd audits every read. With --file the kubeconfig is written with mode 0600.

    Example: labctl clusters kubeconfig lab --file ~/.kube/lab.yaml

    Parameters
    ----------
    name
        The cluster (NAME or cluster/NAME).
    """
    import os
    from urllib.parse import quote

    from lab.client.api import LabClient
    from lab.runtime.exits import handle

    name = name.removeprefix("cluster/")
    with handle():
        async with LabClient.from_settings() as client:
            answer = await client.get(f"/api/clusters/{quote(name, safe='')}/kubeconfig")
        text = str(answer["kubeconfig"])
        if file is None:
            print(text, end="")
            return
        target = file.expanduser()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(text)
    print(f"wrote {target}")
