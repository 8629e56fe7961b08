-- A machine's or server's power driver (docs/power.md). target is "server/NAME" or
-- "machine/NAME"; settings is JSON without secrets; sealed is the BMC password sealed with
-- AES-GCM under a key derived from the audit key (empty when the driver has none). The
-- secrets store will take the sealed column over.
CREATE TABLE IF NOT EXISTS power_drivers (
    target TEXT PRIMARY KEY,
    driver TEXT NOT NULL,
    settings TEXT NOT NULL,
    sealed TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL
);
