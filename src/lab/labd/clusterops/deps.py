"""What cluster operations need from the rest of labd: the secrets store, the artifacts and
the cluster registry, as narrow Protocols (the pieces are built elsewhere in labd)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from attrs import frozen

from lab.errors import NotFound, Unavailable
from lab.model import Cluster

if TYPE_CHECKING:
    from lab.labd.context import LabdContext


class SecretStore(Protocol):
    async def put(self, name: str, value: bytes) -> None: ...
    async def get(self, name: str) -> bytes: ...
    async def delete(self, name: str) -> object: ...


@frozen(kw_only=True)
class ArtifactRef:
    name: str
    version: str
    arch: str
    sha256: str
    size: int


class ArtifactSource(Protocol):
    async def find(self, name: str, version: str, arch: str) -> ArtifactRef:
        """NotFound when no such artifact was added."""
        ...

    def chunks(self, ref: ArtifactRef) -> AsyncIterator[bytes]: ...


def _part(context: LabdContext, name: str) -> Any:
    part = getattr(context, name, None)
    if part is None:
        raise Unavailable(f"this labd has no {name} store")
    return part


def secrets(context: LabdContext) -> SecretStore:
    store: SecretStore = _part(context, "secrets")
    return store


def artifacts(context: LabdContext) -> ArtifactSource:
    source: ArtifactSource = _part(context, "artifacts")
    return source


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
