-- A send records a row per notified member, and each of the table's indexes keyed by user
-- took one more page write per member: the key the counts read, (user_id, room_id,
-- stream_ordering), is now the primary key and the only such index.
ALTER TABLE event_push_actions DROP CONSTRAINT event_push_actions_pkey;
DROP INDEX event_push_actions_room;
DROP INDEX event_push_actions_user;
ALTER TABLE event_push_actions ADD PRIMARY KEY (user_id, room_id, stream_ordering);
