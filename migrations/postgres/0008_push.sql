-- Push: what each event's push rules decided for each recipient, and where to push.

-- One row per (recipient, event) whose push rules said notify; highlight = 1 when a rule
-- asked for the highlight tweak. Unread counts are the rows after the user's read receipt.
CREATE TABLE event_push_actions (
    user_id          TEXT NOT NULL,
    room_id          TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    stream_ordering  BIGINT NOT NULL,
    highlight        BIGINT NOT NULL,
    actions          TEXT NOT NULL,
    ts               BIGINT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX event_push_actions_room ON event_push_actions (user_id, room_id, stream_ordering);
CREATE INDEX event_push_actions_user ON event_push_actions (user_id, stream_ordering);

-- HTTP pushers (POST /pushers/set), delivered to through a push gateway.
CREATE TABLE pushers (
    user_id              TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    app_id               TEXT NOT NULL,
    pushkey              TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    app_display_name     TEXT NOT NULL,
    device_display_name  TEXT NOT NULL,
    profile_tag          TEXT,
    lang                 TEXT NOT NULL,
    data                 TEXT NOT NULL,
    created_ts           BIGINT NOT NULL,
    PRIMARY KEY (app_id, pushkey, user_id)
);
CREATE INDEX pushers_user ON pushers (user_id);
