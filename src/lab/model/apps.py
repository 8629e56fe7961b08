"""App releases: a release (an app installed from a module on a cluster namespace) and its
revisions, as labd records them (docs/apps.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from attrs import Factory, frozen

RevisionStatus = Literal[
    "pending-install",
    "pending-upgrade",
    "pending-rollback",
    "deployed",
    "superseded",
    "failed",
    "uninstalled",
]
Operation = Literal["install", "upgrade", "rollback", "uninstall"]

PENDING: dict[str, RevisionStatus] = {
    "install": "pending-install",
    "upgrade": "pending-upgrade",
    "rollback": "pending-rollback",
}
HISTORY_MAX = 10
"""Revisions kept per release unless ``--history-max`` says otherwise."""


@frozen(kw_only=True)
class ReleaseKey:
    cluster: str
    namespace: str
    name: str

    @property
    def resource(self) -> str:
        """The RBAC resource: ``cluster/C/namespace/NS/app/NAME``."""
        return f"cluster/{self.cluster}/namespace/{self.namespace}/app/{self.name}"

    def __str__(self) -> str:
        return f"{self.cluster}/{self.namespace}/{self.name}"


@frozen(kw_only=True)
class ObjectRef:
    """One applied object: what the inventory lists and prune deletes (never a ``data`` one
    without --delete-data: the module said it holds data)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    data: bool = False

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(
            api_version=str(obj["apiVersion"]),
            kind=str(obj["kind"]),
            namespace=str(meta.get("namespace", "")),
            name=str(meta["name"]),
        )

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What makes two refs the same object (``data`` aside)."""
        return (self.api_version, self.kind, self.namespace, self.name)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
        }
        if self.data:
            out["data"] = True
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObjectRef:
        return cls(
            api_version=data["apiVersion"],
            kind=data["kind"],
            namespace=data.get("namespace", ""),
            name=data["name"],
            data=bool(data.get("data", False)),
        )

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.name}"


@frozen(kw_only=True)
class AppRevision:
    """One revision of a release. ``values`` never holds a secret value (``<sealed>`` stands
    for each); ``secret_ref`` names the secrets-store entries that do, and ``manifest`` is ""
    when the manifest itself is sealed there."""

    key: ReleaseKey
    revision: int
    module: str
    version: str
    module_digest: str
    values: dict[str, Any] = Factory(dict)
    secret_ref: str = ""
    manifest: str = ""
    manifest_digest: str = ""
    inventory: tuple[ObjectRef, ...] = ()
    status: RevisionStatus = "pending-install"
    operation: Operation = "install"
    description: str = ""
    requested_by: str = ""
    request_id: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None


@frozen(kw_only=True)
class ReleaseLock:
    """Who runs an operation on a release, until when (a lease)."""

    key: ReleaseKey
    owner: str
    operation: str
    who: str
    lease_until: datetime | None


@frozen(kw_only=True)
class ExpiredLock:
    """A lease that ran out: the revision it left (now failed) and who held it."""

    key: ReleaseKey
    revision: int | None
    owner: str
    operation: str
    who: str
