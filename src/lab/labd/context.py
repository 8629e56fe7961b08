"""What labd's request handlers can reach: config, store, and the live parts of the daemon."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from attrs import define, field
from quart import current_app

from lab.labd.access.ratelimit import RateLimiter
from lab.labd.access.user_sessions import UserSessions
from lab.runtime.metrics import LabdMetrics

if TYPE_CHECKING:
    from lab.labd.apps.engine import AppEngine
    from lab.labd.artifacts import ArtifactStore
    from lab.labd.audit.checkpoints import Checkpointer
    from lab.labd.audit.keys import AuditKeys
    from lab.labd.cluster import ClusterMember
    from lab.labd.clusterops.engine import OpEngine
    from lab.labd.clusters import ClusterRegistry
    from lab.labd.config import LabdConfig
    from lab.labd.hub.registry import AgentHub
    from lab.labd.identity.ca import CAService
    from lab.labd.identity.identities import Identities, Revocations
    from lab.labd.secrets import SecretsStore
    from lab.store import Store


@define(kw_only=True)
class LabdContext:
    config: LabdConfig
    store: Store
    ca: CAService
    revocations: Revocations
    identities: Identities
    enroll_limiter: RateLimiter
    hub: AgentHub
    # The audit key (MACs the chain, signs checkpoints) and the checkpoint writer.
    audit_keys: AuditKeys
    checkpointer: Checkpointer
    # Sealed values (kubeconfigs, k3s tokens): lab.labd.secrets.
    secrets: SecretsStore
    # Kubernetes clusters: records and their sealed kubeconfigs (lab.labd.clusters).
    clusters: ClusterRegistry
    # Content-addressed files for the agents (lab.labd.artifacts).
    artifacts: ArtifactStore
    # This replica in the replica registry (cluster mode); None in tests that build no cluster.
    cluster: ClusterMember | None = None
    started_monotonic: float = field(factory=time.monotonic)
    # This process's Prometheus metrics, in a registry of their own (see /metrics).
    metrics: LabdMetrics = field(factory=LabdMetrics)
    # Live /ws/exec and /ws/logs sessions; revocation and user disables end them.
    user_sessions: UserSessions = field(factory=UserSessions)
    # Runs cluster operations (lab.labd.clusterops); None in tests that build no engine.
    cluster_ops: OpEngine | None = None
    # Runs app operations and fails those whose lease ran out (lab.labd.apps).
    apps: AppEngine | None = None

    def connected_agents(self) -> int:
        """Agents with a live session on this replica."""
        return len(self.hub)


def ctx() -> LabdContext:
    """The LabdContext of the app serving the current request."""
    state: LabdContext = current_app.extensions["lab"]
    return state
