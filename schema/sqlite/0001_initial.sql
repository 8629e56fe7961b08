-- labctl SQLite schema, version 1.
-- Times are ISO-8601 UTC text with microseconds (2026-11-01T12:00:00.000000+00:00): one fixed
-- width, so text comparison orders them correctly. Dicts and lists are JSON text.

CREATE TABLE servers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    labels      TEXT NOT NULL DEFAULT '{}',
    facts       TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL
);

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
    seen         TEXT NOT NULL,
    lease_until  TEXT NOT NULL
);
CREATE INDEX agent_leases_until ON agent_leases (lease_until);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    disabled    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
);

CREATE TABLE roles (
    name         TEXT PRIMARY KEY,
    description  TEXT NOT NULL DEFAULT '',
    builtin      INTEGER NOT NULL DEFAULT 0
);

-- `position` keeps the order in which rules were written, which `auth explain` shows.
CREATE TABLE role_permissions (
    role      TEXT NOT NULL REFERENCES roles(name) ON DELETE CASCADE,
    effect    TEXT NOT NULL CHECK (effect IN ('allow', 'deny')),
    action    TEXT NOT NULL,
    resource  TEXT NOT NULL,
    position  INTEGER NOT NULL,
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
    roles        TEXT NOT NULL DEFAULT '[]',
    reusable     INTEGER NOT NULL DEFAULT 0,
    max_uses     INTEGER,
    uses         INTEGER NOT NULL DEFAULT 0,
    expires_at   TEXT NOT NULL,
    revoked_at   TEXT,
    created_at   TEXT NOT NULL,
    created_by   TEXT,
    description  TEXT NOT NULL DEFAULT ''
);

CREATE TABLE certificates (
    serial              TEXT PRIMARY KEY,
    subject             TEXT NOT NULL,
    profile             TEXT NOT NULL,
    not_before          TEXT NOT NULL,
    not_after           TEXT NOT NULL,
    issuer_fingerprint  TEXT NOT NULL DEFAULT '',
    revoked_at          TEXT
);
CREATE INDEX certificates_subject ON certificates (subject);
CREATE INDEX certificates_revoked ON certificates (revoked_at) WHERE revoked_at IS NOT NULL;

-- Append-only and hash-chained (see lab.store.auditchain); seq is assigned by the writer.
CREATE TABLE audit (
    seq          INTEGER PRIMARY KEY,
    time         TEXT NOT NULL,
    user         TEXT NOT NULL DEFAULT '',
    session      TEXT NOT NULL DEFAULT '',
    action       TEXT NOT NULL,
    resource     TEXT NOT NULL DEFAULT '',
    result       TEXT NOT NULL DEFAULT 'success',
    duration_ms  REAL NOT NULL DEFAULT 0,
    source       TEXT NOT NULL DEFAULT '',
    details      TEXT NOT NULL DEFAULT '{}',
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_user ON audit (user, seq);
CREATE INDEX audit_action ON audit (action, seq);
CREATE INDEX audit_time ON audit (time);

CREATE TABLE machines (
    mac         TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    hostname    TEXT,
    role        TEXT,
    disk        TEXT,
    inventory   TEXT NOT NULL DEFAULT '{}',
    settings    TEXT NOT NULL DEFAULT '{}',
    phase       TEXT,
    message     TEXT NOT NULL DEFAULT '',
    updated_at  TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX machines_state ON machines (state);

CREATE TABLE clusters (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    description  TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL
);

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
