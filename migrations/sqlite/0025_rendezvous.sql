-- MSC4108 rendezvous sessions (QR code login): a short-lived text blob two devices take turns
-- to write, each write with a fresh ETag. Kept here so that every instance serves them.
CREATE TABLE rendezvous_sessions (
    id          TEXT PRIMARY KEY,
    etag        TEXT NOT NULL,
    content     TEXT NOT NULL,
    modified_ts INTEGER NOT NULL,
    expires_ts  INTEGER NOT NULL
);
CREATE INDEX rendezvous_sessions_expiry ON rendezvous_sessions (expires_ts);
