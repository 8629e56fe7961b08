"""labd's settings: defaults < YAML file (``LABD_CONFIG``) < ``LABD_*`` environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from attrs import field, frozen

from lab.runtime.config import default_data_dir, load_config

DEFAULT_CONFIG_FILE = Path("/etc/lab/labd.yaml")


@frozen(kw_only=True)
class LabdConfig:
    # Address to listen on (LABD_HOST). 0.0.0.0 so agents on the LAN can reach a homelab box.
    host: str = "0.0.0.0"  # noqa: S104
    # HTTPS port of the API and the agent WebSocket (LABD_PORT).
    port: int = 3100
    # Where labd keeps its database, CA and bootstrap token (LABD_DATA_DIR).
    data_dir: str = field(factory=lambda: str(default_data_dir("lab", "lab")))
    # sqlite:///path or postgresql://... (LABD_DATABASE_URL, or DATABASE_URL).
    database_url: str = ""
    # Seconds one database call may take, waits and retries included, before the request
    # gets a 503 (LABD_DATABASE_TIMEOUT): PostgreSQL's per-call deadline, SQLite's busy_timeout.
    database_timeout: float = 5.0
    # Log output: text or json (LABD_LOG_FORMAT), and level (LABD_LOG_LEVEL).
    log_format: str = "text"
    log_level: str = "info"
    # Extra DNS names and IPs for labd's server certificate (LABD_SERVER_NAMES, comma-separated).
    server_names: tuple[str, ...] = ()
    # Enrollment requests per minute per source address (LABD_ENROLL_RATE); 0 disables.
    enroll_rate: float = 10.0
    # Requests per minute per client (certificate serial, else source address) on every route
    # but the health probes (LABD_RATE_GLOBAL); 0 disables.
    rate_global: float = 100.0
    # Requests per minute per client on the join-token routes (LABD_RATE_TOKENS); 0 disables.
    rate_tokens: float = 20.0
    # Benchmark-only switch (LABD_AUDIT_ENABLED): false skips the audit log entirely, which
    # breaks the guarantee that every action is recorded. Never turn it off in production.
    audit_enabled: bool = True
    # A signed audit checkpoint (sequence, head, time) is appended to
    # <data dir>/audit-checkpoints.jsonl every this many entries, and at shutdown
    # (LABD_AUDIT_CHECKPOINT_EVERY); 0: only at shutdown. See docs/rbac-audit.md.
    audit_checkpoint_every: int = 1000
    # New agent WebSocket handshakes admitted per second (LABD_AGENT_ADMIT_RATE), bursting one
    # second's worth; the excess is closed with 1013 and retries with backoff. 0 disables.
    agent_admit_rate: float = 200.0
    # Seconds from accept to a finished TLS handshake (LABD_HANDSHAKE_TIMEOUT); 0 disables.
    handshake_timeout: float = 10.0
    # Seconds a connection may wait with no request in flight, before its first request and
    # between keep-alive requests, before labd closes it (LABD_IDLE_TIMEOUT); 0 disables.
    idle_timeout: float = 10.0
    # Concurrent connections without a client certificate one source address may hold (TLS
    # handshakes in progress count too); more are closed at accept
    # (LABD_MAX_UNAUTHENTICATED_PER_ADDRESS); 0 disables.
    max_unauthenticated_per_address: int = 64
    # Seconds the Kubernetes proxy reuses a user's roles before reading them again
    # (LABD_ROLE_CACHE_TTL); changes made through labd empty the cache at once, on other
    # replicas within a poll: this bounds only changes made around labd. 0 reads every time.
    role_cache_ttl: float = 5.0
    # Seconds a graceful shutdown waits for open requests and sessions (LABD_SHUTDOWN_GRACE).
    shutdown_grace: float = 5.0
    # Output bytes one exec stream may deliver before the rest is dropped and counted
    # (LABD_EXEC_OUTPUT_CAP); 0 means no cap.
    exec_output_cap: int = 1024**3
    # labctl's exec/logs connections: labd pings a client quiet for this many seconds
    # (LABD_CLIENT_PING_INTERVAL) and ends its streams once it answered nothing for
    # LABD_CLIENT_PING_TIMEOUT seconds (0 disables); the audit entries say "ping timeout".
    client_ping_interval: float = 10.0
    client_ping_timeout: float = 30.0
    # Cluster mode: this replica's id in the replica registry and in agents' presence leases
    # (LABD_REPLICA_ID); empty: the host name plus a random suffix, new at every start.
    replica_id: str = ""
    # Where other replicas reach this one for forwarded streams (LABD_ADVERTISE_URL); empty:
    # https://<host>:<port> (the host name when listening on every address).
    advertise_url: str = ""
    # The secrets store's key-encryption key file, 0600, at least 32 bytes
    # (LABD_SECRETS_KEY_FILE); empty: derived from the CA passphrase. Every replica needs the
    # same (docs/clusters.md, "Secrets").
    secrets_key_file: str = ""
    # Where artifacts' content files live (LABD_ARTIFACTS_DIR); empty: <data dir>/artifacts.
    # In cluster mode every replica must see the same directory (docs/clusters.md).
    artifacts_dir: str = ""
    # The largest artifact labd accepts, in bytes (LABD_ARTIFACTS_MAX_SIZE).
    artifacts_max_size: int = 4 * 1024**3
    # Cluster operations (docs/clusters.md): the PATH their commands get on a node
    # (LABD_CLUSTER_EXEC_PATH; empty: the agent's fixed one) and the root under which k3s's
    # files are written (LABD_CLUSTER_NODE_ROOT, "/" on real nodes; "{node}" is replaced by
    # the node's name). Both exist so a test can run the real steps against stand-ins.
    cluster_exec_path: str = ""
    cluster_node_root: str = "/"
    # Seconds an operation's lease lasts (LABD_CLUSTER_OP_LEASE): the replica running it renews
    # it every third of that; once it ran out, any replica fails the operation.
    cluster_op_lease: float = 15.0
    # Seconds a node may take to become Ready (LABD_CLUSTER_READY_TIMEOUT).
    cluster_ready_timeout: float = 300.0
    # Seconds an app operation's lease on its release lasts (LABD_APP_LEASE, docs/apps.md):
    # renewed every third of that; once it ran out, the operation is failed and the release
    # freed.
    app_lease: float = 15.0

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def artifacts_path(self) -> Path:
        return (
            Path(self.artifacts_dir).expanduser()
            if self.artifacts_dir
            else (self.data_path / "artifacts")
        )

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'labd.db'}"


def load_labd_config(environ: Mapping[str, str] | None = None) -> LabdConfig:
    env = os.environ if environ is None else environ
    path = env.get("LABD_CONFIG")
    file = Path(path) if path else (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None)
    return load_config(
        LabdConfig,
        file=file,
        env_prefix="LABD_",
        environ=env,
        aliases={"DATABASE_URL": "database_url"},
    )
