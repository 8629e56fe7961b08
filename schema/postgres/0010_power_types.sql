-- power_drivers as the other tables keep the same kinds of values: the driver settings as
-- JSONB and the time as TIMESTAMPTZ (0005 made both TEXT, the way SQLite stores them).
-- A new table copied across rather than ALTER COLUMN ... TYPE, which CockroachDB does not run
-- inside a transaction, and every migration here is one transaction.
CREATE TABLE power_drivers_typed (
    target TEXT PRIMARY KEY,
    driver TEXT NOT NULL,
    settings JSONB NOT NULL,
    sealed TEXT NOT NULL DEFAULT '',
    updated_at TIMESTAMPTZ NOT NULL
);
INSERT INTO power_drivers_typed (target, driver, settings, sealed, updated_at)
    SELECT target, driver, settings::jsonb, sealed, updated_at::timestamptz FROM power_drivers;
DROP TABLE power_drivers;
ALTER TABLE power_drivers_typed RENAME TO power_drivers;
