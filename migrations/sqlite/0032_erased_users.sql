-- Accounts deactivated with `erase: true`: their events are shown redacted to anyone who
-- was not joined when they were sent (as Synapse).
CREATE TABLE erased_users (
    user_id TEXT PRIMARY KEY,
    erased_ts BIGINT NOT NULL
);
