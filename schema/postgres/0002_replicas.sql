-- Cluster mode: the labd replicas sharing this database, each a lease renewed every ~2 s and
-- considered dead once `lease_until` passed (~6 s). Other replicas read `url` to forward
-- streams for agents a replica holds (agent_leases.replica names it).
-- Plain TEXT key and TIMESTAMPTZ only, so CockroachDB takes it as is.
CREATE TABLE replicas (
    id           TEXT PRIMARY KEY,
    url          TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    seen         TIMESTAMPTZ NOT NULL,
    lease_until  TIMESTAMPTZ NOT NULL
);
CREATE INDEX replicas_lease_until ON replicas (lease_until);

-- The change counter replicas poll (revocations, user disables, role changes bump it): a row
-- of the settings table, created here so every bump is an UPDATE of one existing row.
INSERT INTO settings (key, value) VALUES ('cluster.changes', '0') ON CONFLICT (key) DO NOTHING;
