"""The repositories of one SQL store, built over the backend's runner and writer."""

from __future__ import annotations

from lab.store.auditchain import AuditKey
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
    ReplicaRepository,
    RoleRepository,
    SecretRepository,
    ServerRepository,
    SettingsRepository,
    TokenRepository,
    UserRepository,
)
from lab.store.groupcommit import Flush, GroupCommitWriter
from lab.store.sql.apply import Apply
from lab.store.sql.apps import AppReleases
from lab.store.sql.artifacts import Artifacts
from lab.store.sql.audit import Audit
from lab.store.sql.cluster_ops import ClusterOps
from lab.store.sql.dialect import Runner
from lab.store.sql.identity import Certificates, Roles, Tokens, Users
from lab.store.sql.inventory import Agents, Clusters, Machines, Servers, Settings
from lab.store.sql.power import PowerDrivers
from lab.store.sql.replicas import Replicas
from lab.store.sql.secrets import Secrets
from lab.store.writeops import Outcome, WriteOp, Writer


class SqlRepositories:
    """The repository attributes of :class:`lab.store.base.Store` and its group-commit writer;
    a backend's store class derives from this and adds its connection, the writer's ``flush``
    (one batch, one transaction) and its diagnostics."""

    def __init__(
        self,
        url: str,
        sql: Runner,
        flush: Flush[WriteOp, Outcome],
        *,
        max_batch: int,
        audit_key: AuditKey | None,
    ) -> None:
        self._url = url
        writer: Writer = GroupCommitWriter(flush, max_batch=max_batch)
        self.writer = writer
        self.servers: ServerRepository = Servers(sql)
        self.agents: AgentRepository = Agents(sql, writer)
        self.users: UserRepository = Users(sql)
        self.roles: RoleRepository = Roles(sql)
        self.tokens: TokenRepository = Tokens(sql)
        self.certificates: CertificateRepository = Certificates(sql)
        self.audit: AuditRepository = Audit(sql, writer, audit_key)
        self.machines: MachineRepository = Machines(sql)
        self.clusters: ClusterRepository = Clusters(sql)
        self.settings: SettingsRepository = Settings(sql)
        self.replicas: ReplicaRepository = Replicas(sql)
        self.power: PowerRepository = PowerDrivers(sql)
        self.cluster_ops: ClusterOpRepository = ClusterOps(sql)
        self.secrets: SecretRepository = Secrets(sql)
        self.artifacts: ArtifactRepository = Artifacts(sql)
        self.apps: AppReleaseRepository = AppReleases(sql)
        self.apply: ApplyRepository = Apply(sql)

    @property
    def url(self) -> str:
        return self._url

    async def aclose(self) -> None:
        """Stop accepting group-commit writes; queued ones still commit (see the backend's
        ``open_*``, which drains and closes)."""
        self.writer.close()
