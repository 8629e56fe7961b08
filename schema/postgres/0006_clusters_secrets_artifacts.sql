-- Secrets (docs/clusters.md, "Secrets"): each value sealed with AES-256-GCM under a data key;
-- the data keys are stored only wrapped by the key-encryption key, which is never in the
-- database (LABD_SECRETS_KEY_FILE, else derived from the CA passphrase). kek_id names the
-- key-encryption key that wrapped a data key, key_id beside each value names its data key,
-- so a wrong key is reported as such and rotation knows what to re-seal.
CREATE TABLE IF NOT EXISTS secret_keys (
    id         TEXT PRIMARY KEY,
    kek_id     TEXT NOT NULL,
    wrapped    TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS secrets (
    name       TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL REFERENCES secret_keys (id),
    sealed     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS secrets_key ON secrets (key_id);

-- Clusters grow what the registry shows: where the API server is, its version, the last
-- status seen, and whether labd created the cluster or imported it. The kubeconfig itself is
-- a secret (cluster/NAME/kubeconfig), never a column here.
ALTER TABLE clusters ADD COLUMN origin TEXT NOT NULL DEFAULT 'imported';
ALTER TABLE clusters ADD COLUMN api_server TEXT NOT NULL DEFAULT '';
ALTER TABLE clusters ADD COLUMN version TEXT NOT NULL DEFAULT '';
ALTER TABLE clusters ADD COLUMN status TEXT NOT NULL DEFAULT 'unknown';
ALTER TABLE clusters ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
ALTER TABLE clusters ADD COLUMN updated_at TIMESTAMPTZ;

-- Artifacts (docs/clusters.md, "Artifacts"): metadata rows; the content is a file named by its
-- sha256 under <data dir>/artifacts/, so two names with the same bytes share one file.
CREATE TABLE IF NOT EXISTS artifacts (
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    arch       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       INT8 NOT NULL,
    filename   TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (name, version, arch)
);
CREATE INDEX IF NOT EXISTS artifacts_sha256 ON artifacts (sha256);
