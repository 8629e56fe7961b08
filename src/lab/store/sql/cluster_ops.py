"""The repository of cluster operations and their steps (migration 0007, docs/clusters.md).

An operation is run by one replica at a time: :meth:`ClusterOps.claim` takes it with a lease
in one conditional UPDATE, every later write is guarded by that owner, and
:meth:`ClusterOps.abandon` fails the operations whose lease ran out (or that this replica owned
before it restarted), so none stays "running".
"""

# ruff: noqa: S608 -- SQL is assembled only from constant column lists, never from input.

from __future__ import annotations

import builtins
import json
from datetime import datetime
from typing import Any

from lab.errors import Conflict
from lab.model.operations import ClusterOp, OpStep
from lab.store.rules import not_found
from lab.store.sql.dialect import Runner, Tx

_OP_COLS = (
    "id, cluster, kind, status, params, requested_by, owner, lease_until, error,"
    " created_at, started_at, ended_at"
)
_STEP_COLS = "seq, name, node, status, started_at, ended_at, error"
ACTIVE = ("pending", "running")


def _steps(tx: Tx, op_id: str) -> tuple[OpStep, ...]:
    codec = tx.dialect.codec
    rows = tx.all(
        f"SELECT {_STEP_COLS} FROM cluster_op_steps WHERE op_id = ? ORDER BY seq", (op_id,)
    )
    return tuple(
        OpStep(
            seq=int(r[0]),
            name=r[1],
            node=r[2],
            status=r[3],
            started_at=codec.opt_parse_time(r[4]),
            ended_at=codec.opt_parse_time(r[5]),
            error=r[6],
        )
        for r in rows
    )


def _op(tx: Tx, row: Any) -> ClusterOp:
    codec = tx.dialect.codec
    return ClusterOp(
        id=row[0],
        cluster=row[1],
        kind=row[2],
        status=row[3],
        params=json.loads(row[4]),
        requested_by=row[5],
        owner=row[6],
        lease_until=codec.opt_parse_time(row[7]),
        error=row[8],
        created_at=codec.opt_parse_time(row[9]),
        started_at=codec.opt_parse_time(row[10]),
        ended_at=codec.opt_parse_time(row[11]),
        steps=_steps(tx, row[0]),
    )


def _get(tx: Tx, op_id: str) -> ClusterOp:
    row = tx.one(f"SELECT {_OP_COLS} FROM cluster_ops WHERE id = ?", (op_id,))
    if row is None:
        raise not_found("cluster operation", op_id)
    return _op(tx, row)


def _held(tx: Tx, op_id: str, owner: str) -> None:
    row = tx.one("SELECT status, owner FROM cluster_ops WHERE id = ?", (op_id,))
    if row is None:
        raise not_found("cluster operation", op_id)
    if row[0] != "running" or row[1] != owner:
        raise Conflict(
            f"cluster operation {op_id} is no longer run by {owner}",
            details={"op": op_id, "status": row[0], "owner": row[1]},
        )


class ClusterOps:
    def __init__(self, db: Runner) -> None:
        self._db = db

    async def create(self, op: ClusterOp) -> ClusterOp:
        """Record ``op`` (pending) with its steps. Conflict when the cluster already has a
        pending or running operation: one operation per cluster at a time."""

        def tx_(tx: Tx) -> ClusterOp:
            codec = tx.dialect.codec
            busy = tx.one(
                "SELECT id, kind FROM cluster_ops WHERE cluster = ? AND status IN (?, ?)",
                (op.cluster, *ACTIVE),
            )
            if busy is not None:
                raise Conflict(
                    f"cluster {op.cluster} already has a {busy[1]} operation in progress"
                    f" ({busy[0]})",
                    details={"cluster": op.cluster, "op": busy[0]},
                )
            assert op.created_at is not None
            tx.run(
                f"INSERT INTO cluster_ops ({_OP_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    op.id,
                    op.cluster,
                    op.kind,
                    "pending",
                    json.dumps(op.params, sort_keys=True),
                    op.requested_by,
                    "",
                    None,
                    "",
                    codec.time(op.created_at),
                    None,
                    None,
                ),
            )
            tx.many(
                f"INSERT INTO cluster_op_steps (op_id, {_STEP_COLS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(op.id, s.seq, s.name, s.node, "pending", None, None, "") for s in op.steps],
            )
            return _get(tx, op.id)

        return await self._db.write(tx_)

    async def get(self, op_id: str) -> ClusterOp:
        return await self._db.read(_get, op_id)

    async def list(
        self, *, cluster: str | None = None, limit: int = 20
    ) -> builtins.list[ClusterOp]:
        """Newest first."""

        def tx_(tx: Tx) -> builtins.list[ClusterOp]:
            if cluster is None:
                rows = tx.all(
                    f"SELECT {_OP_COLS} FROM cluster_ops ORDER BY created_at DESC, id LIMIT ?",
                    (limit,),
                )
            else:
                rows = tx.all(
                    f"SELECT {_OP_COLS} FROM cluster_ops WHERE cluster = ?"
                    " ORDER BY created_at DESC, id LIMIT ?",
                    (cluster, limit),
                )
            return [_op(tx, r) for r in rows]

        return await self._db.read(tx_)

    async def claim(self, op_id: str, owner: str, *, now: datetime, lease_until: datetime) -> bool:
        """Take ``op_id`` to run it: a pending or failed operation (a resume: its failed steps
        go back to pending), or a running one whose lease ran out. False when another replica
        holds it or it already succeeded."""

        def tx_(tx: Tx) -> bool:
            codec = tx.dialect.codec
            taken = tx.run(
                "UPDATE cluster_ops SET status = 'running', owner = ?, lease_until = ?,"
                " error = '', ended_at = NULL, started_at = COALESCE(started_at, ?)"
                " WHERE id = ? AND (status IN ('pending', 'failed')"
                " OR (status = 'running' AND lease_until < ?))",
                (owner, codec.time(lease_until), codec.time(now), op_id, codec.time(now)),
            )
            if taken != 1:
                return False
            tx.run(
                "UPDATE cluster_op_steps SET status = 'pending', error = '', ended_at = NULL"
                " WHERE op_id = ? AND status IN ('failed', 'running')",
                (op_id,),
            )
            return True

        return await self._db.write(tx_)

    async def renew(self, op_id: str, owner: str, *, lease_until: datetime) -> bool:
        """Extend the lease; False when ``owner`` no longer holds the operation."""

        def tx_(tx: Tx) -> bool:
            return (
                tx.run(
                    "UPDATE cluster_ops SET lease_until = ?"
                    " WHERE id = ? AND owner = ? AND status = 'running'",
                    (tx.dialect.codec.time(lease_until), op_id, owner),
                )
                == 1
            )

        return await self._db.write(tx_)

    async def step(
        self, op_id: str, owner: str, seq: int, *, status: str, at: datetime, error: str = ""
    ) -> None:
        """Mark step ``seq`` running, done or failed. Conflict when ``owner`` lost the lease."""

        def tx_(tx: Tx) -> None:
            _held(tx, op_id, owner)
            t = tx.dialect.codec.time(at)
            if status == "running":
                tx.run(
                    "UPDATE cluster_op_steps SET status = ?, started_at = ?, ended_at = NULL,"
                    " error = '' WHERE op_id = ? AND seq = ?",
                    (status, t, op_id, seq),
                )
            else:
                tx.run(
                    "UPDATE cluster_op_steps SET status = ?, ended_at = ?, error = ?"
                    " WHERE op_id = ? AND seq = ?",
                    (status, t, error, op_id, seq),
                )

        await self._db.write(tx_)

    async def finish(
        self, op_id: str, owner: str, *, status: str, at: datetime, error: str = ""
    ) -> ClusterOp:
        """End the operation (succeeded or failed); Conflict when ``owner`` lost the lease."""

        def tx_(tx: Tx) -> ClusterOp:
            _held(tx, op_id, owner)
            tx.run(
                "UPDATE cluster_ops SET status = ?, error = ?, ended_at = ?, lease_until = NULL"
                " WHERE id = ?",
                (status, error, tx.dialect.codec.time(at), op_id),
            )
            return _get(tx, op_id)

        return await self._db.write(tx_)

    async def abandon(self, *, now: datetime, owner: str | None = None) -> builtins.list[ClusterOp]:
        """Fail every running operation whose lease ran out by ``now``, and (``owner``) every
        one that replica held: it restarted, so nothing of it runs any more. Their running
        steps fail with the reason. Returns the operations failed here."""

        def tx_(tx: Tx) -> builtins.list[ClusterOp]:
            t = tx.dialect.codec.time(now)
            rows = tx.all(
                "SELECT id, owner FROM cluster_ops WHERE status = 'running'"
                " AND (lease_until < ? OR owner = ?)",
                (t, owner if owner is not None else ""),
            )
            failed = []
            for op_id, holder in rows:
                why = (
                    f"labd (replica {holder}) stopped while running this operation"
                    if holder
                    else "this operation's runner stopped"
                )
                running = tx.one(
                    "SELECT seq, name, node FROM cluster_op_steps WHERE op_id = ?"
                    " AND status = 'running' ORDER BY seq LIMIT 1",
                    (op_id,),
                )
                if running is not None:
                    where = f"{running[1]} on {running[2]}" if running[2] else running[1]
                    why = f"{why}, during step {where}"
                tx.run(
                    "UPDATE cluster_op_steps SET status = 'failed', ended_at = ?, error = ?"
                    " WHERE op_id = ? AND status = 'running'",
                    (t, "interrupted: " + why, op_id),
                )
                tx.run(
                    "UPDATE cluster_ops SET status = 'failed', error = ?, ended_at = ?,"
                    " lease_until = NULL WHERE id = ? AND status = 'running'",
                    (why, t, op_id),
                )
                failed.append(_get(tx, op_id))
            return failed

        return await self._db.write(tx_)
