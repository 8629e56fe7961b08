-- Cluster operations (docs/clusters.md, "Operations"): create, add-node, remove-node, upgrade,
-- delete, each a row with its steps so `labctl clusters describe` shows progress and the step
-- that failed. The replica running an operation holds it by a lease (owner, lease_until) that
-- it renews; an operation whose lease ran out is failed by whichever replica notices, so
-- nothing stays "running" after a crash. params is JSON without secrets (tokens, CA keys and
-- datastore URLs live in the secrets store).
CREATE TABLE IF NOT EXISTS cluster_ops (
    id           TEXT PRIMARY KEY,
    cluster      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    status       TEXT NOT NULL,
    params       TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    owner        TEXT NOT NULL DEFAULT '',
    lease_until  TEXT,
    error        TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    ended_at     TEXT
);
CREATE INDEX IF NOT EXISTS cluster_ops_cluster ON cluster_ops (cluster, created_at);
CREATE INDEX IF NOT EXISTS cluster_ops_status ON cluster_ops (status);

-- One row per step, in the order they run (seq); node is "" for a step of the whole cluster.
CREATE TABLE IF NOT EXISTS cluster_op_steps (
    op_id      TEXT NOT NULL REFERENCES cluster_ops (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    name       TEXT NOT NULL,
    node       TEXT NOT NULL DEFAULT '',
    status     TEXT NOT NULL,
    started_at TEXT,
    ended_at   TEXT,
    error      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (op_id, seq)
);
