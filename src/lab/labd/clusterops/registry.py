"""What cluster operations keep in the rest of labd: their secrets' names, and the cluster
registry's record of a cluster labd creates (origin ``created``)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from lab.errors import NotFound
from lab.model import Cluster

if TYPE_CHECKING:
    from lab.labd.context import LabdContext


def secret_name(cluster: str, what: str) -> str:
    return f"cluster/{cluster}/{what}"


# --- the cluster registry's records of clusters labd creates -----------------------------------

CREATED = "created"


async def record_created(
    context: LabdContext, name: str, *, api_server: str, version: str, created_by: str
) -> None:
    """The registry's record of a cluster being created (status ``creating``); Conflict when
    the name is taken."""
    await context.store.clusters.create(
        Cluster(
            name=name,
            origin=CREATED,
            status="creating",
            api_server=api_server,
            version=version,
            created_by=created_by,
        )
    )


async def set_cluster(context: LabdContext, name: str, **changes: Any) -> None:
    """Update the registry's record (status, version, api_server); gone is fine."""
    with contextlib.suppress(NotFound):
        await context.store.clusters.update(name, **changes)


async def forget_cluster(context: LabdContext, name: str) -> None:
    with contextlib.suppress(NotFound):
        await context.store.clusters.delete(name)
