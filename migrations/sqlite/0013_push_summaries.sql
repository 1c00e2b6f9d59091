-- Unread notifications older than the retention are folded into one row per user and
-- room (their count, highlights, and the position of the newest folded), so that a room
-- its member never reads no longer keeps a row per message for ever.
CREATE TABLE event_push_summary (
    user_id          TEXT NOT NULL,
    room_id          TEXT NOT NULL,
    stream_ordering  INTEGER NOT NULL,
    notif_count      INTEGER NOT NULL,
    highlight_count  INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id)
) WITHOUT ROWID;
