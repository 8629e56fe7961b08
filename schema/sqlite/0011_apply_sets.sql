-- labctl apply's inventories (docs/apply.md): which objects each named set applied, so that
-- `apply --prune --set NAME` deletes exactly the recorded objects missing from the new files
-- and never guesses from labels. An object belongs to at most one set (the primary key);
-- objects made by hand have no row and are never pruned. `applied` is what the set declared
-- (JSON: for a Server, the labels the set owns). App and Cluster objects are recorded here
-- too, though they are applied through their own operations.
CREATE TABLE IF NOT EXISTS apply_objects (
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    set_name    TEXT NOT NULL,
    applied     TEXT NOT NULL DEFAULT '{}',
    applied_by  TEXT NOT NULL DEFAULT '',
    applied_at  TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE INDEX IF NOT EXISTS apply_objects_set ON apply_objects (set_name, kind, name);
