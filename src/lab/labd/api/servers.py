"""Servers: list with label selectors and presence, show one, change labels.

Presence comes from the agents' leases in the database (``store.agents.online``), so every
replica gives the same answer whichever of them holds an agent's connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from attrs import Factory, frozen
from quart import Blueprint, request

from lab.errors import Invalid, NotFound
from lab.labd.access.auth import requires
from lab.labd.api.bodies import body
from lab.labd.audit.entries import annotate
from lab.labd.context import ctx
from lab.model import Agent, Certificate, Server
from lab.model.labels import (
    Requirement,
    Selector,
    label_key_problem,
    label_value_problem,
    parse_selectors,
)
from lab.model.text import Name

bp = Blueprint("servers", __name__)

STATUSES = ("online", "offline")
# The facts a list shows; the full set comes with GET /api/servers/NAME.
SMALL_FACTS = ("os", "load", "uptime", "memory")


def check_labels(set_: Mapping[str, str], remove: Iterable[str], *, where: str = "body") -> None:
    """Raise :class:`Invalid` naming the first bad key or value (``details["key"]``)."""
    for key, value in set_.items():
        problem = label_key_problem(key)
        if problem is not None:
            raise Invalid(
                f"label key {key!r} is not valid: {problem}",
                details={"fields": [f"{where}.set"], "key": key},
            )
        problem = label_value_problem(value)
        if problem is not None:
            raise Invalid(
                f"value {value!r} of label {key!r} is not valid: {problem}",
                details={"fields": [f"{where}.set.{key}"], "key": key},
            )
    for key in remove:
        problem = label_key_problem(key)
        if problem is not None:
            raise Invalid(
                f"label key {key!r} is not valid: {problem}",
                details={"fields": [f"{where}.remove"], "key": key},
            )


def parse_selector(pairs: Iterable[str]) -> dict[str, str]:
    """``["k=v", ...]`` from ``?label=`` as a mapping; Invalid for malformed pairs."""
    selector: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise Invalid(
                f"label selector {pair!r} must be KEY=VALUE",
                details={"fields": ["query.label"], "key": pair},
            )
        selector[key] = value
    check_labels(selector, (), where="query.label")
    return selector


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def server_view(
    server: Server,
    agent: Agent | None,
    cert: Certificate | None,
    online: Mapping[str, str],
    *,
    full: bool,
) -> dict[str, Any]:
    """The JSON shape of one server in the list (``full=False``) and detail answers."""
    replica = online.get(server.id)
    facts = (
        dict(server.facts)
        if full
        else {k: server.facts[k] for k in SMALL_FACTS if k in server.facts}
    )
    version = (agent.version if agent is not None else "") or server.facts.get("agent_version")
    extra: dict[str, Any] = {}
    if full:
        # How the agent identity was enrolled: token id, creator, binding, time, new/replace.
        extra["enrollment"] = dict(agent.enrollment) if agent is not None else None
    return {
        "id": server.id,
        "name": server.name,
        "labels": dict(server.labels),
        "status": "online" if replica is not None else "offline",
        "replica": replica,
        "agent_version": str(version) if version else None,
        "facts": facts,
        "last_seen": _iso(agent.last_seen if agent is not None else None),
        "created_at": _iso(server.created_at),
        "cert_serial": agent.cert_serial if agent is not None else None,
        "cert_not_after": _iso(cert.not_after if cert is not None else None),
        **extra,
    }


async def _one(name: str) -> dict[str, Any]:
    store = ctx().store
    server = await store.servers.get_by_name(name)
    try:
        agent: Agent | None = await store.agents.get_by_server(server.id)
    except NotFound:
        agent = None
    cert = None
    if agent is not None and agent.cert_serial:
        try:
            cert = await store.certificates.get(agent.cert_serial)
        except NotFound:
            cert = None
    online = await store.agents.online(at=datetime.now(UTC))
    return server_view(server, agent, cert, online, full=True)


@bp.get("/api/servers")
@requires("user", action="servers:list", resource="server/*")
async def list_() -> dict[str, Any]:
    # ?selector= takes the full grammar (lab.model.labels, repeated: ANDed); ?label=KEY=VALUE
    # is the older equality-only form.
    legacy = parse_selector(request.args.getlist("label"))
    selector = Selector(tuple(Requirement(k, "=", (v,)) for k, v in legacy.items()))
    selector += parse_selectors(request.args.getlist("selector"))
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        raise Invalid(
            f"status {status!r} is not one of: {', '.join(STATUSES)}",
            details={"fields": ["query.status"]},
        )
    store = ctx().store
    servers = [
        server
        for server in await store.servers.list(labels=selector.equalities() or None)
        if selector.matches(server.labels)
    ]
    online = await store.agents.online(at=datetime.now(UTC))
    agents = {a.server_id: a for a in await store.agents.list()}
    # One read of the certificate table instead of one per server.
    serials = {a.cert_serial for a in agents.values() if a.cert_serial}
    certs = {c.serial: c for c in await store.certificates.list() if c.serial in serials}
    items = []
    for server in servers:
        agent = agents.get(server.id)
        cert = certs.get(agent.cert_serial or "") if agent is not None else None
        item = server_view(server, agent, cert, online, full=False)
        if status is None or item["status"] == status:
            items.append(item)
    return {"items": items}


@bp.get("/api/servers/<name>")
# Bastions read one server to learn that an installed machine's agent enrolled.
@requires("user", "bastion", action="servers:get", resource="server/{name}")
async def get(name: str) -> dict[str, Any]:
    return await _one(name)


@frozen(kw_only=True)
class LabelChange:
    set: dict[Name, Name] = Factory(dict)
    remove: list[Name] = Factory(list)


@bp.patch("/api/servers/<name>/labels")
@requires("user", action="servers:label", resource="server/{name}")
async def label(name: str) -> dict[str, Any]:
    change = await body(LabelChange)
    check_labels(change.set, change.remove)
    clash = sorted(set(change.set) & set(change.remove))
    if clash:
        raise Invalid(
            f"label {clash[0]!r} is both set and removed",
            details={"fields": ["body.remove"], "key": clash[0]},
        )
    store = ctx().store
    before = await store.servers.get_by_name(name)
    # The audit hook writes the entry (durably, before this answer leaves) with these details.
    annotate(set=dict(change.set), remove=list(change.remove), before=dict(before.labels))
    await store.servers.set_labels(name, change.set, change.remove)
    return await _one(name)
