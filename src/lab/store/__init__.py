"""Storage: repository Protocols, backends chosen by URL, migrations.

Daemons import only this package (``open_store`` and the Protocols), never a backend module.
"""

from lab.store.audited import PendingAudit, audit_next_change
from lab.store.base import (
    AgentRepository,
    AuditRepository,
    CertificateRepository,
    ClusterRepository,
    MachineRepository,
    ReplicaRepository,
    RoleRepository,
    ServerRepository,
    SettingsRepository,
    Store,
    TokenRepository,
    UserRepository,
)
from lab.store.open import open_store

__all__ = [
    "AgentRepository",
    "AuditRepository",
    "CertificateRepository",
    "ClusterRepository",
    "MachineRepository",
    "PendingAudit",
    "ReplicaRepository",
    "RoleRepository",
    "ServerRepository",
    "SettingsRepository",
    "Store",
    "TokenRepository",
    "UserRepository",
    "audit_next_change",
    "open_store",
]
