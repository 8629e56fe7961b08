"""Storage: repository Protocols, backends chosen by URL, migrations.

Daemons import only this package (``open_store``, the Protocols and the names below), never
one of its modules: what labd needs of the audit chain (its key, start record and verifier),
of the builtin roles and of the store's refusals is re-exported here, so the modules behind it
can move. tests/store/test_public_surface.py holds labd, the CLI and the other daemons to it.
"""

from lab.store.auditchain import AuditKey, ChainStart, canonical_time
from lab.store.audited import PendingAudit, audit_next_change
from lab.store.auditverify import ChainVerifier, Checkpoint, Verdict
from lab.store.base import (
    AgentRepository,
    ApplyRepository,
    AppReleaseRepository,
    ArtifactRepository,
    AuditRepository,
    CertificateRepository,
    ClusterOpRepository,
    ClusterRepository,
    MachineRepository,
    PowerRepository,
    PowerSetting,
    ReplicaRepository,
    RoleRepository,
    SealedSecret,
    SecretKeyRow,
    SecretRepository,
    ServerRepository,
    SettingsRepository,
    Store,
    TokenRepository,
    UserRepository,
)
from lab.store.enrollment import server_exists
from lab.store.open import open_store
from lab.store.rules import token_refusal
from lab.store.seed import SELF_SERVICE

__all__ = [
    "SELF_SERVICE",
    "AgentRepository",
    "AppReleaseRepository",
    "ApplyRepository",
    "ArtifactRepository",
    "AuditKey",
    "AuditRepository",
    "CertificateRepository",
    "ChainStart",
    "ChainVerifier",
    "Checkpoint",
    "ClusterOpRepository",
    "ClusterRepository",
    "MachineRepository",
    "PendingAudit",
    "PowerRepository",
    "PowerSetting",
    "ReplicaRepository",
    "RoleRepository",
    "SealedSecret",
    "SecretKeyRow",
    "SecretRepository",
    "ServerRepository",
    "SettingsRepository",
    "Store",
    "TokenRepository",
    "UserRepository",
    "Verdict",
    "audit_next_change",
    "canonical_time",
    "open_store",
    "server_exists",
    "token_refusal",
]
