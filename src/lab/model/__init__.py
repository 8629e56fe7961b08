"""Domain records (attrs) and the one cattrs converter. No I/O, no trio."""

from lab.model.converter import converter, structure, unstructure
from lab.model.enrollment import AgentEnrollment, EnrolledAgent
from lab.model.records import (
    Agent,
    Artifact,
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
from lab.model.replicas import Replica

__all__ = [
    "Agent",
    "AgentEnrollment",
    "Artifact",
    "AuditEntry",
    "Certificate",
    "Cluster",
    "Effect",
    "EnrolledAgent",
    "JoinToken",
    "Machine",
    "MachineState",
    "Permission",
    "Replica",
    "Role",
    "Server",
    "TokenKind",
    "User",
    "UserRole",
    "converter",
    "structure",
    "unstructure",
]
