-- Cluster mode: the labd replicas sharing this database (see schema/postgres/0002). A single
-- SQLite box registers itself too, so `labctl` shows the same view in both modes.
CREATE TABLE replicas (
    id           TEXT PRIMARY KEY,
    url          TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    seen         TEXT NOT NULL,
    lease_until  TEXT NOT NULL
);
CREATE INDEX replicas_lease_until ON replicas (lease_until);

-- The change counter replicas poll; bumped by revocations, user disables and role changes.
INSERT INTO settings (key, value) VALUES ('cluster.changes', '0') ON CONFLICT (key) DO NOTHING;
