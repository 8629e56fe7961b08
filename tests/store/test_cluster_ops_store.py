"""cluster_ops and their steps on SQLite and PostgreSQL: one operation per cluster, claims by
lease, owner-guarded writes, and abandoned operations failed (never left running)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lab.errors import Conflict, NotFound
from lab.model.operations import ClusterOp, OpStep
from lab.store import Store

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _op(op_id: str = "op1", cluster: str = "c1") -> ClusterOp:
    return ClusterOp(
        id=op_id,
        cluster=cluster,
        kind="create",
        params={"servers": ["a"], "version": "v1"},
        requested_by="user/admin",
        created_at=T0,
        steps=(
            OpStep(seq=0, name="preflight", node="a"),
            OpStep(seq=1, name="install", node="a"),
            OpStep(seq=2, name="register"),
        ),
    )


async def test_create_claim_steps_finish(store: Store) -> None:
    op = await store.cluster_ops.create(_op())
    assert op.status == "pending" and [s.name for s in op.steps] == [
        "preflight",
        "install",
        "register",
    ]
    assert op.params == {"servers": ["a"], "version": "v1"}
    with pytest.raises(Conflict, match="already has a create operation"):
        await store.cluster_ops.create(_op("op2"))
    await store.cluster_ops.create(_op("op3", cluster="other"))  # another cluster is free

    lease = T0 + timedelta(seconds=30)
    assert await store.cluster_ops.claim("op1", "r1", now=T0, lease_until=lease)
    # held: a second replica cannot take it before the lease runs out
    assert not await store.cluster_ops.claim("op1", "r2", now=T0, lease_until=lease)
    await store.cluster_ops.step("op1", "r1", 0, status="running", at=T0)
    await store.cluster_ops.step("op1", "r1", 0, status="done", at=T0)
    with pytest.raises(Conflict, match="no longer run by r2"):
        await store.cluster_ops.step("op1", "r2", 1, status="running", at=T0)
    await store.cluster_ops.step("op1", "r1", 1, status="failed", at=T0, error="boom")
    done = await store.cluster_ops.finish("op1", "r1", status="failed", at=T0, error="boom")
    assert done.status == "failed" and done.failed_step is not None
    assert done.failed_step.name == "install" and done.failed_step.error == "boom"

    # resume: a failed operation is claimed again, its failed step back to pending
    assert await store.cluster_ops.claim("op1", "r2", now=T0, lease_until=lease)
    again = await store.cluster_ops.get("op1")
    assert again.status == "running" and again.owner == "r2" and again.error == ""
    assert [s.status for s in again.steps] == ["done", "pending", "pending"]
    finished = await store.cluster_ops.finish("op1", "r2", status="succeeded", at=T0)
    assert finished.status == "succeeded"
    assert not await store.cluster_ops.claim("op1", "r1", now=T0, lease_until=lease)
    listed = await store.cluster_ops.list(cluster="c1")
    assert [o.id for o in listed] == ["op1"]
    with pytest.raises(NotFound):
        await store.cluster_ops.get("nope")


async def test_abandoned_operations_fail_never_stay_running(store: Store) -> None:
    await store.cluster_ops.create(_op())
    await store.cluster_ops.create(_op("op2", cluster="c2"))
    await store.cluster_ops.claim("op1", "r1", now=T0, lease_until=T0 + timedelta(seconds=10))
    await store.cluster_ops.claim("op2", "r2", now=T0, lease_until=T0 + timedelta(seconds=60))
    await store.cluster_ops.step("op1", "r1", 1, status="running", at=T0)

    # r1 restarts: its own operation fails at once, r2's (lease still valid) is left alone
    failed = await store.cluster_ops.abandon(now=T0, owner="r1")
    assert [o.id for o in failed] == ["op1"]
    op1 = await store.cluster_ops.get("op1")
    assert op1.status == "failed" and "during step install on a" in op1.error
    assert op1.steps[1].status == "failed" and op1.steps[1].error.startswith("interrupted")
    assert (await store.cluster_ops.get("op2")).status == "running"
    # the lease of r2 runs out: any replica fails it; r2 can no longer write to it
    failed = await store.cluster_ops.abandon(now=T0 + timedelta(seconds=61))
    assert [o.id for o in failed] == ["op2"]
    with pytest.raises(Conflict):
        await store.cluster_ops.finish("op2", "r2", status="succeeded", at=T0)
    assert not await store.cluster_ops.renew("op2", "r2", lease_until=T0)
