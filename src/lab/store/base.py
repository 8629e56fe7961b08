"""Repository Protocols: the only face of storage that daemons see.

Every method is async and safe to call from trio; backends run blocking drivers in worker
threads behind a ``CapacityLimiter``. Methods raise :class:`lab.errors.NotFound` for a missing
record, :class:`lab.errors.Conflict` for a duplicate key and :class:`lab.errors.Unavailable` when
the database cannot be reached.

Cancellation: a cancelled call may still complete in the database (a worker thread cannot be
interrupted); callers must treat the outcome as unknown, which is why writes are idempotent
where they can be.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

from attrs import frozen

from lab.model import (
    Agent,
    AgentEnrollment,
    Artifact,
    AuditEntry,
    Certificate,
    Cluster,
    EnrolledAgent,
    JoinToken,
    Machine,
    MachineState,
    Permission,
    Replica,
    Role,
    Server,
    User,
)
from lab.model.apps import AppRevision, ExpiredLock, ObjectRef, ReleaseKey, ReleaseLock
from lab.model.declared import Declared, InventoryRow, ObjectKey, Plan
from lab.model.operations import ClusterOp
from lab.store.auditchain import ChainStart


class ServerRepository(Protocol):
    async def create(self, server: Server) -> Server: ...
    async def get(self, server_id: str) -> Server: ...
    async def get_by_name(self, name: str) -> Server: ...
    async def list(self, *, labels: dict[str, str] | None = None) -> list[Server]:
        """Servers whose labels include every pair of ``labels``, ordered by name."""
        ...

    async def set_labels(
        self, name: str, set_: dict[str, str], remove: Sequence[str]
    ) -> Server: ...
    async def set_facts(self, server_id: str, facts: dict[str, Any]) -> Server: ...
    async def delete(self, name: str) -> None: ...


class AgentRepository(Protocol):
    async def upsert(self, agent: Agent) -> Agent:
        """Insert or replace the agent row of ``agent.server_id``."""
        ...

    async def get_by_server(self, server_id: str) -> Agent: ...
    async def list(self) -> list[Agent]: ...

    async def enrollment_check(self, token_id: str, name: str) -> tuple[JoinToken | None, bool]:
        """What an enrollment checks before signing, in one read: the join token
        ``token_id`` (None when there is none) and whether a server is named ``name``."""
        ...

    async def enroll(self, plan: AgentEnrollment) -> EnrolledAgent:
        """Enroll in one transaction: consume the token, create the server (or, with
        ``plan.replace``, take it over and revoke its other certificates), record the new
        certificate and point the agent row at it.

        Raises ``Unauthenticated`` (token expired, revoked, used up) and ``Conflict`` (details
        ``reason``: ``server_exists``) with nothing written.
        """
        ...

    async def heartbeat(
        self, server_id: str, *, replica: str, seen: datetime, lease_until: datetime
    ) -> None:
        """Renew the presence lease of a server's agent (group-committed; durable on return)."""
        ...

    async def release(self, server_id: str, *, replica: str) -> None:
        """Drop the lease if ``replica`` still holds it."""
        ...

    async def online(self, *, at: datetime) -> dict[str, str]:
        """server_id -> replica for every lease still valid at ``at``."""
        ...


class UserRepository(Protocol):
    async def create(self, user: User) -> User: ...
    async def get(self, user_id: str) -> User: ...
    async def get_by_name(self, name: str) -> User: ...
    async def list(self) -> list[User]: ...
    async def set_disabled(self, name: str, disabled: bool) -> User: ...
    async def grant(self, user_id: str, role: str) -> None:
        """Give a role (idempotent); NotFound if the role does not exist."""
        ...

    async def revoke(self, user_id: str, role: str) -> None: ...
    async def roles_of(self, user_id: str) -> builtins.list[str]: ...


class RoleRepository(Protocol):
    async def upsert(self, role: Role) -> Role:
        """Create or replace a role with exactly ``role.permissions``."""
        ...

    async def get(self, name: str) -> Role: ...
    async def list(self) -> list[Role]: ...
    async def delete(self, name: str) -> None:
        """Delete a role; Conflict for a builtin role or one still held by users."""
        ...

    async def add_permission(self, name: str, permission: Permission) -> Role: ...
    async def remove_permission(self, name: str, permission: Permission) -> Role: ...


class TokenRepository(Protocol):
    async def create(self, token: JoinToken) -> JoinToken: ...
    async def get(self, token_id: str) -> JoinToken: ...
    async def list(self) -> list[JoinToken]: ...
    async def revoke(self, token_id: str, *, at: datetime) -> JoinToken: ...
    async def consume(self, token_id: str, *, at: datetime) -> JoinToken:
        """Count one use atomically and return the token as it was before the use.

        Raises ``Unauthenticated`` (details ``reason``: ``unknown``, ``expired``, ``revoked``,
        ``used``) when the token may not be used; of two concurrent calls on a one-time token
        exactly one succeeds. The caller has already checked the secret against the hash.
        """
        ...


class CertificateRepository(Protocol):
    async def record(self, cert: Certificate) -> Certificate: ...
    async def get(self, serial: str) -> Certificate: ...
    async def list(self, *, subject: str | None = None) -> list[Certificate]: ...
    async def revoke(self, serial: str, *, at: datetime) -> Certificate: ...
    async def revoked(self) -> builtins.list[Certificate]: ...


class AuditRepository(Protocol):
    async def append(self, entry: AuditEntry) -> AuditEntry:
        """Chain and store one entry; returns it with ``seq``, ``prev_hash`` and ``hash``.

        Returns only once the entry is durable (group commit: many producers share one
        transaction, each awaits its own).
        """
        ...

    async def list(
        self,
        *,
        user: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[AuditEntry]: ...

    async def last_seq(self) -> int: ...
    async def head(self) -> tuple[int, str]:
        """(seq, hash) of the last entry; (0, "") when the log is empty."""
        ...

    async def chain_start(self) -> ChainStart | Literal["pending"] | None:
        """The keyed chain's start record as stored: parsed, ``"pending"`` (left by the
        migration, before labd first starts the chain), or None when missing or unreadable
        (:meth:`start_chain` says which, and why)."""
        ...

    async def start_chain(self) -> ChainStart:
        """Check the store's audit key against the keyed chain's start record, writing the
        record first on a database that has none yet (``pending`` after the migration).

        Raises ``AuditKeyMismatch`` when the chain was started with another key,
        ``Unavailable`` when the record is missing or forged or the store has no key.
        """
        ...


class MachineRepository(Protocol):
    async def upsert(self, machine: Machine) -> Machine: ...
    async def get(self, mac: str) -> Machine: ...
    async def list(self, *, state: MachineState | None = None) -> list[Machine]: ...
    async def delete(self, mac: str) -> None: ...


class ClusterRepository(Protocol):
    async def create(self, cluster: Cluster) -> Cluster: ...
    async def get(self, name: str) -> Cluster: ...
    async def list(self) -> list[Cluster]: ...
    async def update(
        self,
        name: str,
        *,
        status: str | None = None,
        version: str | None = None,
        api_server: str | None = None,
        description: str | None = None,
    ) -> Cluster:
        """Change the given columns (and ``updated_at``); ``NotFound`` for an unknown name."""
        ...

    async def delete(self, name: str) -> None: ...


class SettingsRepository(Protocol):
    async def get(self, key: str) -> str | None: ...
    async def set(self, key: str, value: str) -> None: ...
    async def set_if_absent(self, key: str, value: str) -> str:
        """Store ``value`` unless the key exists; return what is stored (first writer wins)."""
        ...


class ReplicaRepository(Protocol):
    """The labd replicas sharing this database (cluster mode) and the change counter they poll.

    A replica row is a lease: :meth:`register` inserts or renews it (every ~2 s), a replica
    whose ``lease_until`` passed is dead and its row is taken over or removed by anyone.
    """

    async def register(self, replica: Replica) -> Replica:
        """Insert or renew ``replica.id``'s row (url, seen and lease replaced)."""
        ...

    async def get(self, replica_id: str) -> Replica: ...
    async def list(self, *, alive_at: datetime | None = None) -> list[Replica]:
        """Every replica (only those whose lease is valid at ``alive_at``), ordered by id."""
        ...

    async def remove(self, replica_id: str) -> None:
        """Drop the row (idempotent: a missing replica is not an error)."""
        ...

    async def holders(self, *, at: datetime) -> dict[str, str]:
        """Server name -> replica for every agent presence lease still valid at ``at``."""
        ...

    async def bump_changes(self) -> int:
        """Increment the change counter atomically; returns the new value."""
        ...

    async def changes(self) -> int:
        """The change counter: grows on every revocation, user disable or role change."""
        ...


@frozen(kw_only=True)
class PowerSetting:
    """``target`` ("server/NAME" or "machine/NAME"), its driver, its settings without secrets,
    and the sealed secret (empty when none)."""

    target: str
    driver: str
    settings: dict[str, Any]
    sealed: str = ""
    updated_at: datetime | None = None


class PowerRepository(Protocol):
    """Each machine's or server's power driver; the BMC secret only sealed (docs/power.md)."""

    async def set(self, setting: PowerSetting) -> PowerSetting:
        """Insert or replace the driver of ``setting.target``."""
        ...

    async def get(self, target: str) -> PowerSetting: ...
    async def delete(self, target: str) -> None:
        """Drop the row (idempotent)."""
        ...

    async def sealed_in_row(self) -> list[PowerSetting]:
        """Rows whose password is sealed in the row itself (``v1:``, before the secrets store)."""
        ...

    async def replace_sealed(self, target: str, old: str, new: str) -> bool:
        """Set ``sealed`` to ``new`` if it is still ``old``; whether it changed."""
        ...


class ClusterOpRepository(Protocol):
    """Recorded cluster operations and their steps (lab.store.sql.cluster_ops)."""

    async def create(self, op: ClusterOp) -> ClusterOp: ...
    async def get(self, op_id: str) -> ClusterOp: ...
    async def list(
        self, *, cluster: str | None = None, limit: int = 20
    ) -> builtins.list[ClusterOp]: ...
    async def claim(
        self, op_id: str, owner: str, *, now: datetime, lease_until: datetime
    ) -> bool: ...
    async def renew(self, op_id: str, owner: str, *, lease_until: datetime) -> bool: ...
    async def step(
        self, op_id: str, owner: str, seq: int, *, status: str, at: datetime, error: str = ""
    ) -> None: ...
    async def finish(
        self, op_id: str, owner: str, *, status: str, at: datetime, error: str = ""
    ) -> ClusterOp: ...
    async def abandon(
        self, *, now: datetime, owner: str | None = None
    ) -> builtins.list[ClusterOp]: ...


@frozen(kw_only=True)
class SecretKeyRow:
    """A data key of the secrets store, only as wrapped by the key-encryption ``kek_id``."""

    id: str
    kek_id: str
    wrapped: str
    created_at: datetime


@frozen(kw_only=True)
class SealedSecret:
    """A secret as stored: ``sealed`` under the data key ``key_id`` (never the value)."""

    name: str
    key_id: str
    sealed: str
    created_at: datetime
    updated_at: datetime


class SecretRepository(Protocol):
    """Sealed values and wrapped data keys (labd's secrets store, lab.labd.secrets).

    The store never sees a value or a data key in clear: sealing happens above it.
    """

    async def keys(self) -> builtins.list[SecretKeyRow]:
        """Every data key, newest first (the first is the one new values use)."""
        ...

    async def add_key(self, key: SecretKeyRow) -> None: ...
    async def get(self, name: str) -> SealedSecret: ...
    async def list(self, prefix: str = "") -> builtins.list[SealedSecret]: ...
    async def put(self, name: str, key_id: str, sealed: str) -> SealedSecret:
        """Insert or replace ``name``; ``Conflict`` when ``key_id`` is no longer stored (a
        rotation retired it meanwhile)."""
        ...

    async def delete(self, name: str) -> bool:
        """Drop ``name``; whether it existed."""
        ...

    async def rotate(
        self, key: SecretKeyRow, resealed: Sequence[tuple[SealedSecret, SealedSecret]]
    ) -> int:
        """In one transaction: add ``key``, replace each (old, new) pair whose old row is
        still current (``Conflict`` otherwise: a value changed meanwhile, retry), then drop
        every data key no value uses but ``key``. Returns the number of keys dropped."""
        ...


class AppReleaseRepository(Protocol):
    """App releases, their lock (a lease) and revisions (lab.store.sql.apps, docs/apps.md)."""

    async def lock(
        self,
        key: ReleaseKey,
        *,
        owner: str,
        operation: str,
        who: str,
        now: datetime,
        lease_until: datetime,
        history_max: int | None = None,
    ) -> ReleaseLock:
        """Take the release for one operation; Conflict naming the holder otherwise."""
        ...

    async def renew(self, key: ReleaseKey, owner: str, *, lease_until: datetime) -> bool: ...
    async def unlock(self, key: ReleaseKey, owner: str) -> None: ...
    async def holder(self, key: ReleaseKey) -> ReleaseLock | None: ...
    async def expire(
        self, *, now: datetime, owner: str | None = None, reason: str = ""
    ) -> builtins.list[ExpiredLock]: ...
    async def add(self, rev: AppRevision, owner: str) -> AppRevision: ...
    async def next_revision(self, key: ReleaseKey) -> int: ...
    async def set_status(
        self,
        key: ReleaseKey,
        revision: int,
        owner: str,
        *,
        status: str,
        at: datetime,
        description: str | None = None,
        inventory: tuple[ObjectRef, ...] | None = None,
    ) -> AppRevision: ...
    async def get(self, key: ReleaseKey, revision: int | None = None) -> AppRevision: ...
    async def history(self, key: ReleaseKey) -> builtins.list[AppRevision]: ...
    async def releases(
        self, *, cluster: str | None = None, namespace: str | None = None
    ) -> builtins.list[AppRevision]: ...
    async def trim(self, key: ReleaseKey, owner: str) -> builtins.list[AppRevision]: ...
    async def delete(self, key: ReleaseKey, owner: str) -> builtins.list[AppRevision]: ...


class ArtifactRepository(Protocol):
    """Artifact metadata (lab.store.sql.artifacts); labd keeps the content in files."""

    async def add(self, artifact: Artifact) -> tuple[Artifact, bool]:
        """Insert; (the row, whether it is new). Same key and content: no change; same key,
        other content: ``Conflict``."""
        ...

    async def get(self, name: str, version: str, arch: str) -> Artifact: ...
    async def list(self, name: str | None = None) -> builtins.list[Artifact]: ...
    async def delete(self, name: str, version: str, arch: str) -> tuple[Artifact, int]:
        """Drop the row; (it, how many rows still name its content)."""
        ...

    async def references(self, sha256: str) -> int: ...


class ApplyRepository(Protocol):
    """labd's own objects in their declared form and apply's inventories (lab.store.sql.apply,
    docs/apply.md)."""

    async def current(self, keys: Sequence[ObjectKey]) -> dict[ObjectKey, Declared]:
        """The objects of ``keys`` that exist, as declared now."""
        ...

    async def list(self, kind: str) -> builtins.list[Declared]: ...
    async def inventory(
        self, set_name: str | None, keys: Sequence[ObjectKey] = ()
    ) -> builtins.list[InventoryRow]:
        """The rows of set ``set_name`` and the rows (of any set) of ``keys``."""
        ...

    async def commit(self, plan: Plan) -> dict[str, str | None]:
        """Write ``plan`` in one transaction, all or nothing; each changed object's new
        ``resourceVersion`` (None: removed), by ``kind/name``.

        Raises ``Conflict`` when an object moved since the plan read it or another set
        recorded it meanwhile (unless ``plan.force``), for a builtin role, a role still held,
        or a change that leaves no enabled admin; ``NotFound`` for a server or role that is
        gone. Nothing is written then."""
        ...


class Store(Protocol):
    """Hands out the repositories of one database; opened by :func:`lab.store.open_store`."""

    servers: ServerRepository
    agents: AgentRepository
    users: UserRepository
    roles: RoleRepository
    tokens: TokenRepository
    certificates: CertificateRepository
    audit: AuditRepository
    machines: MachineRepository
    clusters: ClusterRepository
    settings: SettingsRepository
    replicas: ReplicaRepository
    power: PowerRepository
    cluster_ops: ClusterOpRepository
    secrets: SecretRepository
    artifacts: ArtifactRepository
    apps: AppReleaseRepository
    apply: ApplyRepository

    @property
    def url(self) -> str: ...

    async def schema_version(self) -> int: ...
    async def ping(self) -> float:
        """Round-trip one trivial query; returns its latency in seconds."""
        ...

    async def aclose(self) -> None: ...
