-- Transaction ids are scoped to the room as well as the device: the same txn id sent to two
-- rooms is two events (Synapse scopes them by request path), not a retry of the first.
CREATE TABLE transaction_ids_by_room (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    room_id   TEXT NOT NULL,
    txn_id    TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, room_id, txn_id)
);
INSERT INTO transaction_ids_by_room (user_id, device_id, room_id, txn_id, event_id)
SELECT t.user_id, t.device_id, e.room_id, t.txn_id, t.event_id
FROM transaction_ids t JOIN events e ON e.event_id = t.event_id;
DROP TABLE transaction_ids;
ALTER TABLE transaction_ids_by_room RENAME TO transaction_ids;
