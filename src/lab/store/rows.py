"""Rows <-> records, for both backends: one column list and one conversion per table.

Both schemas hold the same columns in the same order; what differs is how a driver carries a
time and a JSON value. SQLite has neither type, so its backend stores canonical text;
PostgreSQL has ``TIMESTAMPTZ`` and ``JSONB``, which psycopg converts itself. A backend states
those four conversions by subclassing :class:`RowCodec`; every table's conversion is written
once here on top of them.

Booleans are bound as Python ``bool`` in both: sqlite3 stores them as the integers 1 and 0, and
reads go through ``bool()``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from lab.model import (
    Agent,
    AuditEntry,
    Certificate,
    Cluster,
    Effect,
    JoinToken,
    Machine,
    MachineState,
    Permission,
    Replica,
    Role,
    Server,
    TokenKind,
    User,
)

Row = tuple[Any, ...]
Params = tuple[object, ...]

USER_COLS = "id, name, disabled, created_at"
ROLE_COLS = "name, description, builtin, kubernetes_groups"
PERMISSION_COLS = "effect, action, resource"
JOIN_TOKENS_COLS = (
    "id, kind, secret_hash, roles, reusable, max_uses, uses, expires_at, revoked_at,"
    " created_at, created_by, description, bound_user, bound_hostname, bound_system_uuid,"
    " bound_serial, replace_existing"
)
CERT_COLS = "serial, subject, profile, not_before, not_after, issuer_fingerprint, revoked_at"
SERVER_COLS = "id, name, labels, facts, created_at"
AGENT_SELECT = (
    # An agent's last_seen and replica are those of its presence lease, if it holds one.
    "SELECT a.id, a.server_id, a.cert_serial, a.version, l.seen, l.replica, a.enrollment"
    " FROM agents a LEFT JOIN agent_leases l ON l.server_id = a.server_id"
)
MACHINE_COLS = (
    "mac, state, hostname, role, disk, inventory, settings, phase, message, updated_at, created_at"
)
CLUSTER_COLS = (
    "id, name, description, created_at, origin, api_server, version, status, created_by, updated_at"
)
REPLICA_COLS = "id, url, started_at, seen, lease_until"
AUDIT_COLS = (
    # "user" is quoted: a reserved word in PostgreSQL, an ordinary name in SQLite.
    'seq, time, "user", session, action, resource, result, duration_ms, source, details,'
    " prev_hash, hash"
)
CHANGES_KEY = "cluster.changes"
"""The ``settings`` key that holds the cluster change counter."""


def dumps(value: Any) -> str:
    """Canonical JSON text: sorted keys, no whitespace, so equal values give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def loads(value: str) -> Any:
    return json.loads(value)


def permission(row: Row) -> Permission:
    """A ``role_permissions`` row in ``PERMISSION_COLS`` order."""
    return Permission(effect=Effect(row[0]), action=row[1], resource=row[2])


def permission_params(role: str, permissions: Iterable[Permission], start: int) -> list[Params]:
    """Rows of (role, effect, action, resource, position), positions counted from ``start``."""
    return [
        (role, p.effect.value, p.action, p.resource, start + i) for i, p in enumerate(permissions)
    ]


class RowCodec(ABC):
    """Converts between one backend's rows and the records of :mod:`lab.model`.

    ``row`` arguments are in the order of the table's ``*_COLS``; ``*_params`` methods return
    values in that same order, ready to bind.
    """

    @abstractmethod
    def time(self, value: datetime) -> object:
        """A time as the driver binds it."""

    @abstractmethod
    def parse_time(self, value: Any) -> datetime:
        """A time as the driver returns it."""

    @abstractmethod
    def json(self, value: Any) -> object:
        """A dict or list for a JSON column, as the driver binds it."""

    @abstractmethod
    def parse_json(self, value: Any) -> Any:
        """A JSON column as the driver returns it."""

    def opt_time(self, value: datetime | None) -> object:
        return None if value is None else self.time(value)

    def opt_parse_time(self, value: Any) -> datetime | None:
        return None if value is None else self.parse_time(value)

    # --- identity ---------------------------------------------------------------------------

    def user(self, row: Row) -> User:
        return User(
            id=row[0], name=row[1], disabled=bool(row[2]), created_at=self.parse_time(row[3])
        )

    def user_params(self, user: User) -> Params:
        return (user.id, user.name, user.disabled, self.time(user.created_at))

    def role(self, row: Row, permissions: Iterable[Row]) -> Role:
        """A ``roles`` row with its ``role_permissions`` rows, in position order."""
        return Role(
            name=row[0],
            description=row[1],
            builtin=bool(row[2]),
            permissions=tuple(permission(p) for p in permissions),
            kubernetes_groups=tuple(self.parse_json(row[3])),
        )

    def role_params(self, role: Role) -> Params:
        """The ``roles`` row; permissions are rows of their own (:func:`permission_params`)."""
        return (role.name, role.description, role.builtin, self.json(list(role.kubernetes_groups)))

    def token(self, row: Row) -> JoinToken:
        return JoinToken(
            id=row[0],
            kind=TokenKind(row[1]),
            secret_hash=row[2],
            roles=tuple(self.parse_json(row[3])),
            reusable=bool(row[4]),
            max_uses=row[5],
            uses=row[6],
            expires_at=self.parse_time(row[7]),
            revoked_at=self.opt_parse_time(row[8]),
            created_at=self.parse_time(row[9]),
            created_by=row[10],
            description=row[11],
            user=row[12],
            hostname=row[13],
            system_uuid=row[14],
            serial=row[15],
            replace=bool(row[16]),
        )

    def token_params(self, t: JoinToken) -> Params:
        return (
            t.id, t.kind.value, t.secret_hash, self.json(list(t.roles)), t.reusable, t.max_uses,
            t.uses, self.time(t.expires_at), self.opt_time(t.revoked_at), self.time(t.created_at),
            t.created_by, t.description, t.user, t.hostname, t.system_uuid, t.serial, t.replace,
        )  # fmt: skip

    def cert(self, row: Row) -> Certificate:
        return Certificate(
            serial=row[0],
            subject=row[1],
            profile=row[2],
            not_before=self.parse_time(row[3]),
            not_after=self.parse_time(row[4]),
            issuer_fingerprint=row[5],
            revoked_at=self.opt_parse_time(row[6]),
        )

    def cert_params(self, c: Certificate) -> Params:
        return (
            c.serial, c.subject, c.profile, self.time(c.not_before), self.time(c.not_after),
            c.issuer_fingerprint, self.opt_time(c.revoked_at),
        )  # fmt: skip

    # --- inventory --------------------------------------------------------------------------

    def server(self, row: Row) -> Server:
        return Server(
            id=row[0],
            name=row[1],
            labels=self.parse_json(row[2]),
            facts=self.parse_json(row[3]),
            created_at=self.parse_time(row[4]),
        )

    def server_params(self, s: Server) -> Params:
        return (s.id, s.name, self.json(s.labels), self.json(s.facts), self.time(s.created_at))

    def agent(self, row: Row) -> Agent:
        """A row of ``AGENT_SELECT``."""
        return Agent(
            id=row[0],
            server_id=row[1],
            cert_serial=row[2],
            version=row[3],
            last_seen=self.opt_parse_time(row[4]),
            replica=row[5],
            enrollment=self.parse_json(row[6]),
        )

    def agent_params(self, a: Agent) -> Params:
        """The ``agents`` row: id, server_id, cert_serial, version, enrollment."""
        return (a.id, a.server_id, a.cert_serial, a.version, self.json(a.enrollment))

    def machine(self, row: Row) -> Machine:
        return Machine(
            mac=row[0],
            state=MachineState(row[1]),
            hostname=row[2],
            role=row[3],
            disk=row[4],
            inventory=self.parse_json(row[5]),
            settings=self.parse_json(row[6]),
            phase=row[7],
            message=row[8],
            updated_at=self.parse_time(row[9]),
            created_at=self.parse_time(row[10]),
        )

    def machine_params(self, m: Machine) -> Params:
        return (
            m.mac, m.state.value, m.hostname, m.role, m.disk, self.json(m.inventory),
            self.json(m.settings), m.phase, m.message, self.time(m.updated_at),
            self.time(m.created_at),
        )  # fmt: skip

    def cluster(self, row: Row) -> Cluster:
        return Cluster(
            id=row[0],
            name=row[1],
            description=row[2],
            created_at=self.parse_time(row[3]),
            origin=row[4],
            api_server=row[5],
            version=row[6],
            status=row[7],
            created_by=row[8],
            updated_at=None if row[9] is None else self.parse_time(row[9]),
        )

    def cluster_params(self, c: Cluster) -> Params:
        return (
            c.id, c.name, c.description, self.time(c.created_at), c.origin, c.api_server,
            c.version, c.status, c.created_by,
            None if c.updated_at is None else self.time(c.updated_at),
        )  # fmt: skip

    def replica(self, row: Row) -> Replica:
        return Replica(
            id=row[0],
            url=row[1],
            started_at=self.parse_time(row[2]),
            seen=self.parse_time(row[3]),
            lease_until=self.parse_time(row[4]),
        )

    def replica_params(self, r: Replica) -> Params:
        return (r.id, r.url, self.time(r.started_at), self.time(r.seen), self.time(r.lease_until))

    # --- audit ------------------------------------------------------------------------------
    # details are canonical JSON text in both schemas: the chain hashes exactly those bytes.

    def audit_entry(self, row: Row) -> AuditEntry:
        return AuditEntry(
            seq=row[0],
            time=self.parse_time(row[1]),
            user=row[2],
            session=row[3],
            action=row[4],
            resource=row[5],
            result=row[6],
            duration_ms=row[7],
            source=row[8],
            details=loads(row[9]),
            prev_hash=row[10],
            hash=row[11],
        )

    def audit_params(self, e: AuditEntry) -> Params:
        return (
            e.seq, self.time(e.time), e.user, e.session, e.action, e.resource, e.result,
            float(e.duration_ms), e.source, dumps(e.details), e.prev_hash, e.hash,
        )  # fmt: skip
