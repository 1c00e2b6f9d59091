-- EDUs that must not be lost (to-device messages carry room keys; device-list updates),
-- queued per destination until it acknowledges them, like events in federation_outbox.
CREATE TABLE federation_edu_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    edu TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX federation_edu_outbox_destination ON federation_edu_outbox (destination, id);
