-- Transaction ids are scoped to the room as well as the device: the same txn id sent to two
-- rooms is two events (Synapse scopes them by request path), not a retry of the first.
ALTER TABLE transaction_ids ADD COLUMN room_id TEXT NOT NULL DEFAULT '';
UPDATE transaction_ids t SET room_id = e.room_id FROM events e WHERE e.event_id = t.event_id;
ALTER TABLE transaction_ids DROP CONSTRAINT transaction_ids_pkey;
ALTER TABLE transaction_ids ADD PRIMARY KEY (user_id, device_id, room_id, txn_id);
ALTER TABLE transaction_ids ALTER COLUMN room_id DROP DEFAULT;
