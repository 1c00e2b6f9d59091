-- To-device messages that arrived from other servers, by sender and message id: a
-- transaction sent again delivers nothing twice. Pruned after a week.
CREATE TABLE to_device_inbox_seen (
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (sender, message_id)
);
