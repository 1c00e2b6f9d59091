-- A send records a row per notified member. The rows were in the table, its primary key
-- (user_id, event_id) and two more indexes keyed by user: each send touched one page per
-- member in each of three trees. Now the table is the one tree the counts read, clustered
-- by (user_id, room_id, stream_ordering); /notifications reads the same rows by user.
CREATE TABLE event_push_actions_by_user (
    user_id          TEXT NOT NULL,
    room_id          TEXT NOT NULL,
    stream_ordering  INTEGER NOT NULL,
    event_id         TEXT NOT NULL,
    highlight        INTEGER NOT NULL,
    actions          TEXT NOT NULL,
    ts               INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, stream_ordering)
) WITHOUT ROWID;
INSERT INTO event_push_actions_by_user
    (user_id, room_id, stream_ordering, event_id, highlight, actions, ts)
SELECT user_id, room_id, stream_ordering, event_id, highlight, actions, ts
FROM event_push_actions WHERE true ON CONFLICT DO NOTHING;
DROP TABLE event_push_actions;
ALTER TABLE event_push_actions_by_user RENAME TO event_push_actions;
CREATE INDEX event_push_actions_ts ON event_push_actions (ts);
