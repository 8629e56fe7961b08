"""The cluster registry's routes (docs/clusters.md): import, list, show, credentials, forget.

``POST /api/clusters/import`` (``clusters:import`` on ``cluster/NAME``, the name from the
body), ``GET /api/clusters`` (``clusters:read`` on ``cluster/*``), ``GET /api/clusters/NAME``
(``clusters:read``), ``GET /api/clusters/NAME/kubeconfig`` (``clusters:read-credentials``: the
one answer that carries credentials), ``DELETE /api/clusters/NAME`` (``clusters:delete``, an
imported cluster only). Every request is audited; no kubeconfig or token is ever in an audit
entry, a log record or any other answer.
"""

from __future__ import annotations

from typing import Any

import trio
from attrs import frozen
from quart import Blueprint, request

from lab.labd.access.auth import principal, requires
from lab.labd.api.answers import created
from lab.labd.api.bodies import body
from lab.labd.audit.entries import annotate
from lab.labd.clusters import Health, check_cluster_name
from lab.labd.context import ctx
from lab.model import Cluster

bp = Blueprint("clusters", __name__)
LIST_PROBES = 8


@frozen(kw_only=True)
class ImportCluster:
    name: str
    kubeconfig: str
    context: str | None = None


def cluster_view(cluster: Cluster, health: Health | None = None) -> dict[str, Any]:
    """A cluster as the API shows it: never its kubeconfig."""
    view: dict[str, Any] = {
        "name": cluster.name,
        "origin": cluster.origin,
        "status": cluster.status,
        "api_server": cluster.api_server,
        "version": cluster.version,
        "description": cluster.description,
        "created_at": cluster.created_at.isoformat(),
        "created_by": cluster.created_by,
        "updated_at": cluster.updated_at.isoformat() if cluster.updated_at else None,
    }
    if health is not None:
        view["health"] = health.view()
    return view


def _live() -> bool:
    return request.args.get("live", "true").lower() not in ("0", "false", "no")


@bp.post("/api/clusters/import")
@requires("user", action="clusters:import", resource="cluster/{body.name}")
@created
async def import_cluster() -> dict[str, Any]:
    wanted = await body(ImportCluster)
    name = check_cluster_name(wanted.name, "body.name")
    who = principal()
    annotate(context=wanted.context)
    cluster = await ctx().clusters.import_cluster(
        name, wanted.kubeconfig, context=wanted.context, created_by=who.subject
    )
    return cluster_view(cluster)


@bp.get("/api/clusters")
@requires("user", action="clusters:read", resource="cluster/*")
async def list_clusters() -> dict[str, Any]:
    registry = ctx().clusters
    clusters = await registry.list()
    healths: dict[str, Health] = {}
    if _live():
        limiter = trio.CapacityLimiter(LIST_PROBES)

        async def one(name: str) -> None:
            async with limiter:
                healths[name] = await registry.health(name)

        async with trio.open_nursery() as nursery:
            for cluster in clusters:
                nursery.start_soon(one, cluster.name)
    return {"items": [cluster_view(c, healths.get(c.name)) for c in clusters]}


@bp.get("/api/clusters/<name>")
@requires("user", action="clusters:read", resource="cluster/{name}")
async def get_cluster(name: str) -> dict[str, Any]:
    registry = ctx().clusters
    cluster = await registry.get(name)
    return cluster_view(cluster, await registry.health(name) if _live() else None)


@bp.get("/api/clusters/<name>/kubeconfig")
@requires("user", action="clusters:read-credentials", resource="cluster/{name}")
async def get_kubeconfig(name: str) -> dict[str, Any]:
    annotate(credentials="kubeconfig")
    return {"name": name, "kubeconfig": await ctx().clusters.kubeconfig(name)}


@bp.delete("/api/clusters/<name>")
@requires("user", action="clusters:delete", resource="cluster/{name}")
async def delete_cluster(name: str) -> dict[str, Any]:
    cluster = await ctx().clusters.delete_imported(name)
    return {"deleted": cluster_view(cluster)}
