"""Recorded cluster operations: an operation and its steps (docs/clusters.md, "Operations")."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from attrs import Factory, frozen

OpKind = Literal["create", "add-node", "remove-node", "upgrade", "delete"]
OpStatus = Literal["pending", "running", "succeeded", "failed"]
StepStatus = Literal["pending", "running", "done", "failed"]

OP_KINDS: tuple[str, ...] = ("create", "add-node", "remove-node", "upgrade", "delete")


@frozen(kw_only=True)
class OpStep:
    """One step of an operation; ``node`` is "" for a step of the whole cluster."""

    seq: int
    name: str
    node: str = ""
    status: StepStatus = "pending"
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str = ""


@frozen(kw_only=True)
class ClusterOp:
    """One cluster operation as recorded; ``params`` never holds a secret."""

    id: str
    cluster: str
    kind: OpKind
    status: OpStatus = "pending"
    params: dict[str, Any] = Factory(dict)
    requested_by: str = ""
    owner: str = ""
    lease_until: datetime | None = None
    error: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    steps: tuple[OpStep, ...] = ()

    @property
    def failed_step(self) -> OpStep | None:
        return next((s for s in self.steps if s.status == "failed"), None)
