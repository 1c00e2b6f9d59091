-- Simplified sliding sync (MSC4186) connections: what each position of a connection (a
-- device's `conn_id`) has sent, so that another instance or a restart continues it. A
-- connection keeps the position it was last asked from and the one it answered with (a lost
-- answer is retried from the first); older positions go at once, idle ones after a week.
CREATE TABLE sliding_sync_positions (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    conn_id    TEXT NOT NULL,
    pos        TEXT NOT NULL,
    state      TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id, pos)
);
CREATE INDEX sliding_sync_positions_age ON sliding_sync_positions (created_ts);

-- Each room's latest event and latest message-like event (what moves it up a room list),
-- kept by every append so that ordering a user's rooms reads one row per room.
ALTER TABLE rooms ADD COLUMN latest_stream INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rooms ADD COLUMN bump_stream INTEGER;
UPDATE rooms SET latest_stream = COALESCE(
    (SELECT MAX(e.stream_ordering) FROM events e WHERE e.room_id = rooms.room_id), 0);
UPDATE rooms SET bump_stream = (SELECT MAX(e.stream_ordering) FROM events e
    WHERE e.room_id = rooms.room_id AND e.type IN ('m.room.create', 'm.room.message',
    'm.room.encrypted', 'm.sticker', 'm.call.invite', 'm.poll.start', 'm.beacon_info'));
