"""The records of labctl's domain.

Every record is frozen and keyword-only; times are timezone-aware UTC. Identifiers are text
(UUID4 hex or a natural key) so both backends store them the same way.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from attrs import Factory, frozen


def new_id() -> str:
    return uuid.uuid4().hex


def now() -> datetime:
    return datetime.now(UTC)


class Effect(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class TokenKind(enum.StrEnum):
    AGENT = "agent"
    USER = "user"


class MachineState(enum.StrEnum):
    DISCOVERED = "discovered"
    QUEUED = "queued"
    INSTALLING = "installing"
    INSTALLED = "installed"
    ENROLLED = "enrolled"
    FAILED = "failed"


@frozen(kw_only=True)
class Server:
    """A managed node, known to labd once its agent enrolled."""

    id: str = Factory(new_id)
    name: str
    labels: dict[str, str] = Factory(dict)
    facts: dict[str, Any] = Factory(dict)
    created_at: datetime = Factory(now)


@frozen(kw_only=True)
class Agent:
    """The agent identity of a server; presence lives in a lease, not here."""

    id: str = Factory(new_id)
    server_id: str
    cert_serial: str | None = None
    version: str = ""
    last_seen: datetime | None = None
    replica: str | None = None
    # How this identity was enrolled: token id, its creator and binding, time, new/replace.
    enrollment: dict[str, Any] = Factory(dict)


@frozen(kw_only=True)
class User:
    id: str = Factory(new_id)
    name: str
    disabled: bool = False
    created_at: datetime = Factory(now)


@frozen(kw_only=True)
class Permission:
    """``effect`` on ``action`` (``servers:exec``) over ``resource`` (``server/web-*``)."""

    effect: Effect
    action: str
    resource: str


@frozen(kw_only=True)
class Role:
    name: str
    description: str = ""
    permissions: tuple[Permission, ...] = ()
    builtin: bool = False
    # Groups the Kubernetes proxy impersonates for holders of this role (Impersonate-Group).
    kubernetes_groups: tuple[str, ...] = ()


@frozen(kw_only=True)
class UserRole:
    user_id: str
    role: str


@frozen(kw_only=True)
class JoinToken:
    """A join token; only the hash of its secret is ever stored.

    Bindings say what the token may enroll: ``user`` (user tokens: exactly that user name);
    ``hostname``, ``system_uuid`` and ``serial`` (agent tokens: that name and that hardware);
    ``replace`` lets an agent token bound to ``hostname`` take over an existing server.
    """

    id: str = Factory(new_id)
    kind: TokenKind
    secret_hash: str
    roles: tuple[str, ...] = ()
    reusable: bool = False
    max_uses: int | None = None
    uses: int = 0
    expires_at: datetime
    revoked_at: datetime | None = None
    created_at: datetime = Factory(now)
    created_by: str | None = None
    description: str = ""
    user: str | None = None
    hostname: str | None = None
    system_uuid: str | None = None
    serial: str | None = None
    replace: bool = False


@frozen(kw_only=True)
class Certificate:
    serial: str
    subject: str
    profile: str
    not_before: datetime
    not_after: datetime
    issuer_fingerprint: str = ""
    revoked_at: datetime | None = None


@frozen(kw_only=True)
class AuditEntry:
    """One audited action; ``seq``, ``prev_hash`` and ``hash`` are set by the store."""

    seq: int = 0
    time: datetime = Factory(now)
    user: str = ""
    session: str = ""
    action: str
    resource: str = ""
    result: str = "success"
    duration_ms: float = 0.0
    source: str = ""
    details: dict[str, Any] = Factory(dict)
    prev_hash: str = ""
    hash: str = ""


@frozen(kw_only=True)
class Machine:
    """A bare-metal machine as the bastion sees it; ``mac`` is normalised ``aa:bb:cc:dd:ee:ff``."""

    mac: str
    state: MachineState = MachineState.DISCOVERED
    hostname: str | None = None
    role: str | None = None
    disk: str | None = None
    inventory: dict[str, Any] = Factory(dict)
    settings: dict[str, Any] = Factory(dict)
    phase: str | None = None
    message: str = ""
    updated_at: datetime = Factory(now)
    created_at: datetime = Factory(now)


@frozen(kw_only=True)
class Artifact:
    """A file labd holds for agents (a k3s binary, an air-gap images tarball), named by
    (name, version, arch) and stored once per content under its sha256."""

    name: str
    version: str
    arch: str
    sha256: str
    size: int
    filename: str = ""
    created_by: str = ""
    created_at: datetime = Factory(now)


@frozen(kw_only=True)
class Cluster:
    """A Kubernetes cluster labd knows: imported from a kubeconfig or created by labd.

    Its kubeconfig is a secret (``cluster/NAME/kubeconfig``), never a field here.
    """

    id: str = Factory(new_id)
    name: str
    description: str = ""
    created_at: datetime = Factory(now)
    origin: str = "imported"
    """``imported`` (labctl clusters import) or ``created`` (labctl clusters create)."""
    api_server: str = ""
    """The API server URL from the kubeconfig."""
    version: str = ""
    """The API server's gitVersion when labd last asked."""
    status: str = "unknown"
    """The lifecycle state labd recorded (``ready``, ``creating``, ``failed``...)."""
    created_by: str = ""
    updated_at: datetime | None = None
