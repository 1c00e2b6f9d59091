-- What another server showed of a room when it invited a user of this server (stripped state
-- events, as JSON), for rooms this server is not in: the invite is shown with it.
CREATE TABLE remote_invite_state (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    stripped TEXT NOT NULL,
    inviter_server TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
