"""Cluster operations over REST (docs/clusters.md, "Create and day 2").

Each route records an operation (``cluster_ops``) and hands it to this replica's engine; the
answer is the operation as recorded, so ``labctl`` can follow its steps with
``GET /api/clusters/NAME/operations/ID``. RBAC: ``clusters:create`` for a create,
``clusters:delete`` for a delete, ``clusters:update`` for nodes, upgrades and resumes,
``clusters:read`` for the operations. No answer carries a token, key or kubeconfig.
"""

from __future__ import annotations

from typing import Any

import trio
from attrs import Factory, evolve, frozen
from quart import Blueprint

from lab.errors import Conflict, Invalid, NotFound, Unavailable
from lab.labd.access.auth import principal, requires
from lab.labd.api.bodies import body
from lab.labd.audit.entries import annotate
from lab.labd.clusterops import plan, registry
from lab.labd.clusterops.engine import new_op_id, now
from lab.labd.clusters import check_cluster_name
from lab.labd.context import ctx
from lab.model.operations import ClusterOp, OpStep

bp = Blueprint("cluster_ops", __name__)


@frozen(kw_only=True)
class CreateCluster:
    servers: list[str]
    agents: list[str] = Factory(list)
    version: str = plan.DEFAULT_VERSION
    cni: str = "flannel"
    datastore: str = "embedded-etcd"
    allow_even: bool = False
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    api_address: str = ""
    api_port: int = 6443
    disable: list[str] = Factory(list)
    labels: dict[str, str] = Factory(dict)


@frozen(kw_only=True)
class AddNode:
    node: str
    role: str = "agent"


@frozen(kw_only=True)
class Upgrade:
    version: str


@frozen(kw_only=True)
class Delete:
    keep_data: bool = False
    force: bool = False


def _time(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _step_view(step: OpStep) -> dict[str, Any]:
    return {
        "seq": step.seq,
        "name": step.name,
        "node": step.node,
        "status": step.status,
        "started_at": _time(step.started_at),
        "ended_at": _time(step.ended_at),
        "error": step.error,
    }


def op_view(op: ClusterOp) -> dict[str, Any]:
    return {
        "id": op.id,
        "cluster": op.cluster,
        "kind": op.kind,
        "status": op.status,
        "requested_by": op.requested_by,
        "owner": op.owner,
        "error": op.error,
        "created_at": _time(op.created_at),
        "started_at": _time(op.started_at),
        "ended_at": _time(op.ended_at),
        "params": op.params,
        "steps": [_step_view(s) for s in op.steps],
    }


def _engine() -> Any:
    engine = getattr(ctx(), "cluster_ops", None)
    if engine is None:
        raise Unavailable("this labd runs no cluster operations")
    return engine


async def current_spec(name: str, *, any_state: bool = False) -> plan.ClusterSpec:
    """The spec after the cluster's last successful operation (``any_state``: or, when none
    succeeded, the one its create was asked with). NotFound for a cluster labd did not
    create."""
    ops = await ctx().store.cluster_ops.list(cluster=name, limit=200)
    for op in ops:
        if op.status == "succeeded" and op.kind != "delete":
            # a remove-node runs against the cluster as it was; "after" is what it left
            return plan.ClusterSpec.from_params(op.params.get("after") or op.params["spec"])
        if op.status == "succeeded":
            break
    if any_state:
        for op in ops:
            if op.kind == "create":
                return plan.ClusterSpec.from_params(op.params["spec"])
    raise NotFound(
        f"cluster {name} was not created by labd (or was deleted): no operations to run on it",
        details={"resource": f"cluster/{name}"},
    )


async def _start(
    name: str, kind: str, spec: plan.ClusterSpec, steps: tuple[OpStep, ...], **extra: Any
) -> dict[str, Any]:
    who = principal()
    op = ClusterOp(
        id=new_op_id(),
        cluster=name,
        kind=kind,  # type: ignore[arg-type]
        params={"spec": spec.to_params(), **extra},
        requested_by=who.subject,
        created_at=now(),
        steps=steps,
    )
    annotate(op=op.id, steps=len(steps))
    recorded = await ctx().store.cluster_ops.create(op)
    return op_view(await _engine().submit(recorded.id))


@bp.post("/api/clusters/<name>/create")
@requires("user", action="clusters:create", resource="cluster/{name}")
async def create(name: str) -> dict[str, Any]:
    check_cluster_name(name, "path.name")
    req = await body(CreateCluster)
    spec = plan.check_create(
        name=name,
        servers=req.servers,
        agents=req.agents,
        version=req.version,
        cni=req.cni,
        datastore=req.datastore,
        allow_even=req.allow_even,
        cluster_cidr=req.cluster_cidr,
        service_cidr=req.service_cidr,
        api_address=req.api_address,
        api_port=req.api_port,
        disable=req.disable,
        labels=req.labels,
    )
    for node in spec.nodes:
        try:
            await ctx().store.servers.get_by_name(node)
        except NotFound as exc:
            raise Invalid(
                f"server/{node} is not enrolled", details={"fields": ["body.servers"]}
            ) from exc
    try:
        existing = await ctx().clusters.get(name)
    except NotFound:
        existing = None
    if existing is not None and existing.origin != registry.CREATED:
        raise Conflict(
            f"cluster {name} exists (imported); pick another name",
            details={"resource": f"cluster/{name}"},
        )
    previous = await ctx().store.cluster_ops.list(cluster=name, limit=1)
    if existing is not None or (previous and previous[0].kind != "delete"):
        raise Conflict(
            f"cluster {name} already exists; resume its last operation"
            f" (labctl clusters resume {name}) or delete it first",
            details={"resource": f"cluster/{name}"},
        )
    if spec.datastore == "external":
        # The endpoint holds a password: sealed, never in the operation's params.
        await ctx().secrets.put(registry.secret_name(name, "datastore"), req.datastore.encode())
    annotate(servers=list(spec.servers), agents=list(spec.agents), version=spec.version)
    await registry.record_created(
        ctx(),
        name,
        api_server=spec.api_url,
        version=spec.version,
        created_by=principal().subject,
    )
    try:
        return await _start(name, "create", spec, plan.create_steps(spec))
    except BaseException:
        with trio.CancelScope(shield=True):
            await registry.forget_cluster(ctx(), name)
        raise


@bp.post("/api/clusters/<name>/nodes")
@requires("user", action="clusters:update", resource="cluster/{name}")
async def add_node(name: str) -> dict[str, Any]:
    req = await body(AddNode)
    spec = plan.with_node(await current_spec(name), req.node, req.role)
    node = req.node.removeprefix("server/")
    try:
        await ctx().store.servers.get_by_name(node)
    except NotFound as exc:
        raise Invalid(f"server/{node} is not enrolled", details={"fields": ["body.node"]}) from exc
    annotate(node=node, role=req.role)
    return await _start(name, "add-node", spec, plan.add_node_steps(node), node=node)


@bp.delete("/api/clusters/<name>/nodes/<node>")
@requires("user", action="clusters:update", resource="cluster/{name}")
async def remove_node(name: str, node: str) -> dict[str, Any]:
    before = await current_spec(name)
    spec = plan.without_node(before, node)
    node = node.removeprefix("server/")
    annotate(node=node)
    # The steps run against the node as it was (its role decides its unit).
    return await _start(
        name, "remove-node", before, plan.remove_node_steps(node), node=node, after=spec.to_params()
    )


@bp.post("/api/clusters/<name>/upgrade")
@requires("user", action="clusters:update", resource="cluster/{name}")
async def upgrade(name: str) -> dict[str, Any]:
    req = await body(Upgrade)
    version = plan.check_version(req.version)
    spec = evolve(await current_spec(name), version=version)
    annotate(version=version)
    return await _start(name, "upgrade", spec, plan.upgrade_steps(spec))


@bp.post("/api/clusters/<name>/delete")
@requires("user", action="clusters:delete", resource="cluster/{name}")
async def delete(name: str) -> dict[str, Any]:
    req = await body(Delete)
    spec = await current_spec(name, any_state=True)
    annotate(keep_data=req.keep_data, force=req.force)
    return await _start(
        name,
        "delete",
        spec,
        plan.delete_steps(spec),
        keep_data=req.keep_data,
        force=req.force,
    )


@bp.post("/api/clusters/<name>/resume")
@requires("user", action="clusters:update", resource="cluster/{name}")
async def resume(name: str) -> dict[str, Any]:
    ops = await ctx().store.cluster_ops.list(cluster=name, limit=1)
    if not ops or ops[0].status != "failed":
        raise Conflict(
            f"cluster {name} has no failed operation to resume",
            details={"resource": f"cluster/{name}"},
        )
    op = ops[0]
    annotate(op=op.id, kind=op.kind)
    return op_view(await _engine().submit(op.id))


@bp.get("/api/clusters/<name>/operations")
@requires("user", action="clusters:read", resource="cluster/{name}")
async def operations(name: str) -> dict[str, Any]:
    ops = await ctx().store.cluster_ops.list(cluster=name, limit=50)
    return {"items": [op_view(op) for op in ops]}


@bp.get("/api/clusters/<name>/operations/<op_id>")
@requires("user", action="clusters:read", resource="cluster/{name}")
async def operation(name: str, op_id: str) -> dict[str, Any]:
    op = await ctx().store.cluster_ops.get(op_id)
    if op.cluster != name:
        raise NotFound(f"cluster {name} has no operation {op_id}")
    return op_view(op)
