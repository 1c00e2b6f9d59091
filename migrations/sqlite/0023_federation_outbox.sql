-- Events waiting to be sent to another server, in the order they were appended (id), and
-- each destination's back-off after failed sends.
CREATE TABLE federation_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    event_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX federation_outbox_destination ON federation_outbox (destination, id);
CREATE TABLE federation_destinations (
    destination TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    retry_at BIGINT NOT NULL
);
