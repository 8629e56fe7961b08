-- The audit chain becomes keyed (HMAC-SHA256 under a key kept outside the database, see
-- docs/rbac-audit.md). Existing rows stay as they are (legacy plain hashes); the first labd
-- that starts with an audit key replaces 'pending' by a start record (JSON, MAC'd under the
-- key) naming the first keyed seq and the last legacy hash, in the same transaction as it
-- reads the tail. A database without this row has had its start record deleted.
INSERT INTO settings (key, value) VALUES ('audit_chain', 'pending') ON CONFLICT (key) DO NOTHING;
