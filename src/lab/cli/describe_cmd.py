"""labctl describe TYPE/NAME: everything labd knows about one resource."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lab.cli.output import OutputOpt
from lab.runtime.output import terminal_text


def render_server(item: dict[str, Any], now: datetime) -> str:
    """The human form of ``GET /api/servers/NAME``: one ``Field: value`` per line."""
    from lab.cli.get_cmd import server_row

    row = server_row(item, now)
    status = str(item.get("status") or "unknown")
    if item.get("replica"):
        status += f" (connected to replica {item['replica']})"
    last_seen = item.get("last_seen")
    cert = item.get("cert_serial")
    lines = [
        ("Name", item.get("name")),
        ("ID", item.get("id")),
        ("Status", status),
        ("Last heartbeat", f"{last_seen} ({row['last-seen']} ago)" if last_seen else "never"),
        ("Agent version", item.get("agent_version") or "-"),
        ("Created", f"{item.get('created_at')} ({row['age']} ago)"),
        ("Certificate", cert or "-"),
        (
            "Cert expiry",
            f"{item.get('cert_not_after')} ({row['cert-expiry']})" if cert else "-",
        ),
    ]
    out = [f"{k + ':':<16}{v}" for k, v in lines]
    out += _enrollment_lines(item.get("enrollment"))
    labels = item.get("labels") or {}
    out.append("Labels:" + ("" if labels else "          <none>"))
    out += [f"  {k}={v}" for k, v in sorted(labels.items())]
    facts = item.get("facts") or {}
    out.append("Facts:" + ("" if facts else "           <none>"))
    out += [f"  {k}: {_fact(v)}" for k, v in sorted(facts.items())]
    # Every value came from labd or the agent: no control character reaches the terminal.
    return "\n".join(terminal_text(line) for line in out)


def _enrollment_lines(trace: Any) -> list[str]:
    """How the server was enrolled: when, with which token, made by whom, bound to what."""
    if not isinstance(trace, dict) or not trace.get("token_id"):
        return [f"{'Enrolled:':<16}-"]
    binding = trace.get("binding") or {}
    bound = ", ".join(f"{k}={v}" for k, v in sorted(binding.items())) or "nothing (new server)"
    mode = trace.get("mode") or "new"
    replaced = trace.get("replaced_serials") or []
    how = "replaced an existing server" if mode == "replace" else "new server"
    if replaced:
        how += f", revoked {', '.join(str(s) for s in replaced)}"
    return [
        f"{'Enrolled:':<16}{trace.get('enrolled_at', '-')} ({how})",
        f"{'Join token:':<16}{trace['token_id']} created by {trace.get('token_created_by') or '-'}",
        f"{'Token binding:':<16}{bound}",
    ]


def _fact(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)


async def describe(resource: str, /, *, output: OutputOpt = "") -> None:
    """Show one resource in detail: a server or a cluster.

    For a server: status and the replica holding its connection, last heartbeat, agent
    version, certificate serial and expiry, labels and every fact the agent reported. For a
    cluster: its record, nodes, last operation with every step, earlier operations.

    Example: labctl describe server/web1 -o yaml

    Parameters
    ----------
    resource
        TYPE/NAME, e.g. server/web1 or cluster/lab.
    """
    from urllib.parse import quote

    from lab.cli.output import check_format
    from lab.cli.resources import parse_resource
    from lab.client.api import LabClient
    from lab.runtime.exits import handle
    from lab.runtime.output import emit, is_data

    with handle():
        kind, name = parse_resource(resource, allowed=("server", "cluster"))
    if kind == "cluster":
        from lab.cli.clusters_cmd import describe_cluster

        await describe_cluster(name, output)
        return
    fmt = check_format(output)
    with handle():
        async with LabClient.from_settings() as client:
            item = await client.get(f"/api/servers/{quote(name, safe='')}")
    if is_data(fmt):
        emit(item, fmt)
    else:
        print(render_server(item, datetime.now(UTC)))
