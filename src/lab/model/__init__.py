"""Domain records (attrs) and the one cattrs converter. No I/O, no trio."""

from lab.model.converter import converter, structure, unstructure
from lab.model.records import (
    Agent,
    AuditEntry,
    Certificate,
    Cluster,
    Effect,
    JoinToken,
    Machine,
    MachineState,
    Permission,
    Role,
    Server,
    TokenKind,
    User,
    UserRole,
)

__all__ = [
    "Agent",
    "AuditEntry",
    "Certificate",
    "Cluster",
    "Effect",
    "JoinToken",
    "Machine",
    "MachineState",
    "Permission",
    "Role",
    "Server",
    "TokenKind",
    "User",
    "UserRole",
    "converter",
    "structure",
    "unstructure",
]
