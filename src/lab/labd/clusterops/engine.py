"""Runs cluster operations: one replica at a time under a lease, every step recorded, the
operation stopped at the first failing node with a hint to resume, and abandoned operations
failed (never left running). Audited at start, failure and end.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import trio

from lab.errors import Conflict, LabError
from lab.labd.audit.entries import record
from lab.labd.clusterops import registry, steps
from lab.labd.clusterops.plan import ClusterSpec, resume_hint
from lab.model.operations import ClusterOp, OpStep

if TYPE_CHECKING:
    from lab.labd.context import LabdContext
    from lab.store import ClusterOpRepository

log = logging.getLogger(__name__)
PREFLIGHT_LIMIT = 8  # nodes preflighted at once
# How often a replica looks for operations whose lease ran out: a third of the lease, within
# these bounds.
SWEEP_MIN, SWEEP_MAX = 0.2, 5.0


def new_op_id() -> str:
    return uuid.uuid4().hex[:16]


def now() -> datetime:
    return datetime.now(UTC)


class OpEngine:
    """Owned by labd's root nursery (:meth:`run`); routes hand it operations to start."""

    def __init__(self, context: LabdContext, owner: str) -> None:
        self.context = context
        self.owner = owner
        self.lease = context.config.cluster_op_lease
        self._send, self._receive = trio.open_memory_channel[str](64)
        self._running: dict[str, trio.CancelScope] = {}
        self.idle = trio.Event()

    @property
    def ops(self) -> ClusterOpRepository:
        return self.context.store.cluster_ops

    async def submit(self, op_id: str) -> ClusterOp:
        """Take ``op_id`` (recorded, pending or failed) and start it on this replica; the
        operation as it now is (running). Conflict when another replica runs it or it
        already succeeded."""
        if not await self.ops.claim(op_id, self.owner, now=now(), lease_until=self._lease_end()):
            raise Conflict(
                f"cluster operation {op_id} is running elsewhere or already ended",
                details={"op": op_id},
            )
        await self._send.send(op_id)
        claimed: ClusterOp = await self.ops.get(op_id)
        return claimed

    async def run(
        self, shutdown: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Fail what a previous run of this replica left running, then start submitted
        operations and fail those whose runner's lease ran out, until ``shutdown``."""
        await self._abandon(owner=self.owner)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sweep)
            task_status.started()

            async def take() -> None:
                async for op_id in self._receive:
                    nursery.start_soon(self._run_one, op_id)

            nursery.start_soon(take)
            await shutdown.wait()
            for scope in list(self._running.values()):
                scope.cancel()
            nursery.cancel_scope.cancel()

    async def _sweep(self) -> None:
        while True:
            try:
                await self._abandon(owner=None)
            except LabError:
                log.warning("could not check cluster operations' leases", exc_info=True)
            await trio.sleep(min(SWEEP_MAX, max(SWEEP_MIN, self.lease / 3)))

    async def _abandon(self, *, owner: str | None) -> None:
        for op in await self.ops.abandon(now=now(), owner=owner):
            log.warning(
                "cluster operation %s (%s %s) failed: %s", op.id, op.kind, op.cluster, op.error
            )
            await self._audit(op, "error", extra={"hint": resume_hint(op.cluster)})

    async def _audit(
        self, op: ClusterOp, result: str, *, extra: dict[str, Any] | None = None
    ) -> None:
        step = op.failed_step
        details: dict[str, Any] = {"op": op.id, "status": op.status}
        if step is not None:
            details |= {"step": step.name, "node": step.node, "error": step.error}
        elif op.error:
            details["error"] = op.error
        await record(
            self.context,
            action=f"clusters:{op.kind}",
            resource=f"cluster/{op.cluster}",
            result=result,
            user=op.requested_by,
            details={**details, **(extra or {})},
        )

    async def _run_one(self, op_id: str) -> None:
        """Run a claimed operation. Whatever goes wrong (the database, the audit log) ends it
        failed and logged, never labd; a lease lost to another replica just stops it here."""
        with trio.CancelScope() as scope:
            self._running[op_id] = scope
            try:
                await self._run_claimed(op_id, scope)
            except Exception as exc:
                if _only(exc, Conflict):
                    log.warning("cluster operation %s: lease lost; stopped here", op_id)
                else:
                    log.error("cluster operation %s: internal error", op_id, exc_info=True)
                    with trio.CancelScope(shield=True):
                        await self._fail(op_id, f"labd could not go on: {_first(exc)}")
            finally:
                self._running.pop(op_id, None)
        if scope.cancelled_caught:
            with trio.CancelScope(shield=True):
                await self._fail(op_id, "labd shut down during this operation")

    async def _run_claimed(self, op_id: str, scope: trio.CancelScope) -> None:
        ops = self.ops
        op = await ops.get(op_id)
        spec = ClusterSpec.from_params(op.params["spec"])
        octx = steps.OpContext(
            context=self.context, spec=spec, params=op.params, requested_by=op.requested_by
        )
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._renew, op_id, scope)
            error = await self._steps(op, octx)
            nursery.cancel_scope.cancel()
        status = "failed" if error else "succeeded"
        done = await ops.finish(op_id, self.owner, status=status, at=now(), error=error)
        await self._registry(done, spec)
        await self._audit(
            done,
            "error" if error else "success",
            extra={"duration_ms": round((time.perf_counter() - started) * 1000)},
        )

    async def _fail(self, op_id: str, why: str) -> None:
        """End ``op_id`` failed now (its running step too) rather than when its lease runs
        out; best effort: the lease still ends it if the database is away."""
        try:
            current = await self.ops.get(op_id)
            running = next((s for s in current.steps if s.status == "running"), None)
            if running is not None:
                await self.ops.step(
                    op_id, self.owner, running.seq, status="failed", at=now(), error=why
                )
            done = await self.ops.finish(op_id, self.owner, status="failed", at=now(), error=why)
            await self._registry(done, ClusterSpec.from_params(done.params["spec"]))
            await self._audit(done, "error", extra={"hint": resume_hint(done.cluster)})
        except LabError:
            log.warning("could not record cluster operation %s as failed", op_id, exc_info=True)

    async def _registry(self, op: ClusterOp, spec: ClusterSpec) -> None:
        """What the registry shows of a created cluster after an operation ended."""
        if op.kind == "create" and op.status == "failed":
            await registry.set_cluster(self.context, op.cluster, status="failed")
        elif op.kind == "upgrade" and op.status == "succeeded":
            await registry.set_cluster(self.context, op.cluster, version=spec.version)

    def _lease_end(self) -> datetime:
        return now() + timedelta(seconds=self.lease)

    async def _renew(self, op_id: str, scope: trio.CancelScope) -> None:
        while True:
            await trio.sleep(self.lease / 3)
            try:
                held = await self.ops.renew(op_id, self.owner, lease_until=self._lease_end())
            except LabError:
                # the database is away: try again; if the lease runs out meanwhile another
                # replica fails the operation and the next renewal says so
                log.warning("cluster operation %s: could not renew its lease", op_id)
                continue
            if not held:
                log.warning("cluster operation %s: lease lost; stopping it here", op_id)
                scope.cancel()
                return

    async def _steps(self, op: ClusterOp, octx: steps.OpContext) -> str:
        """Run the steps not yet done, in order; the operation's error ("" when all ran)."""
        pending = [s for s in op.steps if s.status != "done"]
        preflight = [s for s in pending if s.name == "preflight"]
        if preflight:
            problems = await self._preflight(op, octx, preflight)
            if problems:
                return "preflight failed, nothing was changed: " + "; ".join(problems)
        for step in pending:
            if step.name == "preflight":
                continue
            error = await self._step(op, octx, step)
            if error:
                where = f" on server/{step.node}" if step.node else ""
                return f"step {step.name}{where} failed: {error}; {resume_hint(op.cluster)}"
        return ""

    async def _step(self, op: ClusterOp, octx: steps.OpContext, step: OpStep) -> str:
        await self.ops.step(op.id, self.owner, step.seq, status="running", at=now())
        try:
            await steps.STEPS[step.name](octx, step.node)
        except steps.StepSkipped as skipped:
            await self.ops.step(
                op.id, self.owner, step.seq, status="done", at=now(), error=str(skipped)
            )
            return ""
        except Exception as exc:
            message = exc.message if isinstance(exc, LabError) else f"internal error: {exc!r}"
            if not isinstance(exc, LabError):
                log.error("cluster step %s failed", step.name, exc_info=True)
            await self.ops.step(
                op.id, self.owner, step.seq, status="failed", at=now(), error=message
            )
            return message
        await self.ops.step(op.id, self.owner, step.seq, status="done", at=now())
        return ""

    async def _preflight(
        self, op: ClusterOp, octx: steps.OpContext, todo: list[OpStep]
    ) -> list[str]:
        """Preflight every node (all of them, also after a failure), every problem listed."""
        found: dict[int, list[str]] = {}
        limiter = trio.CapacityLimiter(PREFLIGHT_LIMIT)

        async def one(step: OpStep) -> None:
            async with limiter:
                await self.ops.step(op.id, self.owner, step.seq, status="running", at=now())
                try:
                    problems = await steps.preflight(octx, step.node)
                except Exception as exc:
                    said = exc.message if isinstance(exc, LabError) else repr(exc)
                    problems = [f"server/{step.node}: {said}"]
                found[step.seq] = problems
                await self.ops.step(
                    op.id,
                    self.owner,
                    step.seq,
                    status="failed" if problems else "done",
                    at=now(),
                    error="; ".join(problems),
                )

        async with trio.open_nursery() as nursery:
            for step in todo:
                nursery.start_soon(one, step)
        return [p for seq in sorted(found) for p in found[seq]]


def _only(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` is ``kind`` or a group of nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only(e, kind) for e in exc.exceptions)
    return isinstance(exc, kind)


def _first(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc.message if isinstance(exc, LabError) else type(exc).__name__
