-- labctl PostgreSQL / CockroachDB schema, version 1: the same tables and columns as
-- schema/sqlite/0001_initial.sql.
-- Kept to what CockroachDB accepts: no triggers, stored procedures, LISTEN/NOTIFY, advisory
-- locks or sequences; keys are TEXT (UUID4 hex or natural keys) or INT8.
-- Times are TIMESTAMPTZ (microseconds, compared as times); dicts and lists are JSONB, except
-- the audit details (see the audit table).

CREATE TABLE servers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    labels      JSONB NOT NULL DEFAULT '{}',
    facts       JSONB NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL
);
-- Label selectors are `labels @> '{"k": "v"}'`; CockroachDB would use an INVERTED INDEX, which
-- PostgreSQL spells differently, so this stays a plain scan until fleets need more.

-- The agent identity of a server; rewritten only on enrollment or certificate renewal.
CREATE TABLE agents (
    id           TEXT PRIMARY KEY,
    server_id    TEXT NOT NULL UNIQUE REFERENCES servers(id) ON DELETE CASCADE,
    cert_serial  TEXT,
    version      TEXT NOT NULL DEFAULT ''
);

-- Presence is a lease renewed by heartbeats, kept apart so the identity row above stays cold.
-- `replica` is the labd replica holding the agent's connection (cluster-mode forwarding).
CREATE TABLE agent_leases (
    server_id    TEXT PRIMARY KEY REFERENCES servers(id) ON DELETE CASCADE,
    replica      TEXT NOT NULL,
    seen         TIMESTAMPTZ NOT NULL,
    lease_until  TIMESTAMPTZ NOT NULL
);
CREATE INDEX agent_leases_until ON agent_leases (lease_until);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    disabled    BOOL NOT NULL DEFAULT false,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE roles (
    name         TEXT PRIMARY KEY,
    description  TEXT NOT NULL DEFAULT '',
    builtin      BOOL NOT NULL DEFAULT false
);

-- `position` keeps the order in which rules were written, which `auth explain` shows.
CREATE TABLE role_permissions (
    role      TEXT NOT NULL REFERENCES roles(name) ON DELETE CASCADE,
    effect    TEXT NOT NULL CHECK (effect IN ('allow', 'deny')),
    action    TEXT NOT NULL,
    resource  TEXT NOT NULL,
    position  INT8 NOT NULL,
    PRIMARY KEY (role, effect, action, resource)
);

-- No cascade from roles: deleting a role that users still hold is refused (Conflict).
CREATE TABLE user_roles (
    user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role     TEXT NOT NULL REFERENCES roles(name),
    PRIMARY KEY (user_id, role)
);
CREATE INDEX user_roles_role ON user_roles (role);

CREATE TABLE join_tokens (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('agent', 'user')),
    secret_hash  TEXT NOT NULL,
    roles        JSONB NOT NULL DEFAULT '[]',
    reusable     BOOL NOT NULL DEFAULT false,
    max_uses     INT8,
    uses         INT8 NOT NULL DEFAULT 0,
    expires_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL,
    created_by   TEXT,
    description  TEXT NOT NULL DEFAULT ''
);

CREATE TABLE certificates (
    serial              TEXT PRIMARY KEY,
    subject             TEXT NOT NULL,
    profile             TEXT NOT NULL,
    not_before          TIMESTAMPTZ NOT NULL,
    not_after           TIMESTAMPTZ NOT NULL,
    issuer_fingerprint  TEXT NOT NULL DEFAULT '',
    revoked_at          TIMESTAMPTZ
);
CREATE INDEX certificates_subject ON certificates (subject);
CREATE INDEX certificates_revoked ON certificates (revoked_at) WHERE revoked_at IS NOT NULL;

-- Append-only and hash-chained (see lab.store.auditchain). `seq` is assigned by the writer
-- from the tail it read in the same SERIALIZABLE transaction, never by a sequence (sequences
-- leave gaps and do not order commits across replicas): two replicas appending at once both
-- try the same seq, the PRIMARY KEY makes one of them fail with 40001 and it retries on top.
-- `details` is the canonical JSON text, not JSONB: the chain hashes exactly these bytes, and
-- JSONB would refuse some strings SQLite stores (\u0000).
CREATE TABLE audit (
    seq          INT8 PRIMARY KEY,
    time         TIMESTAMPTZ NOT NULL,
    "user"       TEXT NOT NULL DEFAULT '',
    session      TEXT NOT NULL DEFAULT '',
    action       TEXT NOT NULL,
    resource     TEXT NOT NULL DEFAULT '',
    result       TEXT NOT NULL DEFAULT 'success',
    duration_ms  FLOAT8 NOT NULL DEFAULT 0,
    source       TEXT NOT NULL DEFAULT '',
    details      TEXT NOT NULL DEFAULT '{}',
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_user ON audit ("user", seq);
CREATE INDEX audit_action ON audit (action, seq);
CREATE INDEX audit_time ON audit (time);

CREATE TABLE machines (
    mac         TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    hostname    TEXT,
    role        TEXT,
    disk        TEXT,
    inventory   JSONB NOT NULL DEFAULT '{}',
    settings    JSONB NOT NULL DEFAULT '{}',
    phase       TEXT,
    message     TEXT NOT NULL DEFAULT '',
    updated_at  TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX machines_state ON machines (state);

CREATE TABLE clusters (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    description  TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
