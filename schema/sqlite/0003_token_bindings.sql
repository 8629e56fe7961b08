-- What a join token may enroll (see lab.model.JoinToken): a user token names its one user; an
-- agent token may name a hostname and the hardware (DMI system UUID, serial) it must report;
-- replace_existing lets a hostname-bound agent token take over an existing server. The columns
-- are prefixed because "user" and "replace" are keywords in one dialect or the other.
ALTER TABLE join_tokens ADD COLUMN bound_user TEXT;
ALTER TABLE join_tokens ADD COLUMN bound_hostname TEXT;
ALTER TABLE join_tokens ADD COLUMN bound_system_uuid TEXT;
ALTER TABLE join_tokens ADD COLUMN bound_serial TEXT;
ALTER TABLE join_tokens ADD COLUMN replace_existing INTEGER NOT NULL DEFAULT 0;

-- How the agent identity was enrolled (token id, creator, binding, time, new or replace).
ALTER TABLE agents ADD COLUMN enrollment TEXT NOT NULL DEFAULT '{}';
