-- App releases (docs/apps.md): one row per release (cluster, namespace, name) that also holds
-- its lock, and one row per revision. The lock is a lease (owner, lease_until) that the
-- operation renews while it runs; a lease that ran out means the operation died (labd killed,
-- replica lost), and whichever replica notices fails its revision and frees the release: no
-- release stays "pending" after a crash.
CREATE TABLE IF NOT EXISTS app_releases (
    cluster      TEXT NOT NULL,
    namespace    TEXT NOT NULL,
    name         TEXT NOT NULL,
    lock_owner   TEXT NOT NULL DEFAULT '',
    lock_op      TEXT NOT NULL DEFAULT '',
    lock_who     TEXT NOT NULL DEFAULT '',
    lease_until  TIMESTAMPTZ,
    history_max  INTEGER NOT NULL DEFAULT 10,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (cluster, namespace, name)
);

-- values_json holds the values with every secret field replaced by "<sealed>"; the secret
-- fields (and a manifest that carries them) live in labd's secrets store under secret_ref.
-- inventory is the JSON list of the objects applied ({apiVersion, kind, namespace, name}).
CREATE TABLE IF NOT EXISTS app_revisions (
    cluster         TEXT NOT NULL,
    namespace       TEXT NOT NULL,
    name            TEXT NOT NULL,
    revision        INTEGER NOT NULL,
    module          TEXT NOT NULL,
    version         TEXT NOT NULL,
    module_digest   TEXT NOT NULL,
    values_json     TEXT NOT NULL,
    secret_ref      TEXT NOT NULL DEFAULT '',
    manifest        TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    inventory       TEXT NOT NULL,
    status          TEXT NOT NULL,
    operation       TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    requested_by    TEXT NOT NULL,
    request_id      TEXT NOT NULL DEFAULT '',
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (cluster, namespace, name, revision),
    FOREIGN KEY (cluster, namespace, name) REFERENCES app_releases (cluster, namespace, name)
        ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS app_revisions_status ON app_revisions (status);
