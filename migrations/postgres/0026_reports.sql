-- Reports of events, rooms and users (POST /rooms/{id}/report/{eventId}, /rooms/{id}/report,
-- /users/{id}/report), for the server's administrators to read.
CREATE TABLE reports (
    id          BIGSERIAL PRIMARY KEY,
    received_ts BIGINT NOT NULL,
    reporter    TEXT NOT NULL,
    room_id     TEXT,
    event_id    TEXT,
    user_id     TEXT,
    reason      TEXT
);
CREATE INDEX reports_by_reporter ON reports (reporter);
