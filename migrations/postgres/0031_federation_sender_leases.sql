-- Which instance sends a destination's queued events (several instances on one database):
-- the holder renews its lease while it sends; another takes over once it lapses.
CREATE TABLE federation_sender_leases (
    destination TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ts BIGINT NOT NULL
);
