-- One piece of a room's state over time (a user's memberships, the history visibility),
-- read by stream order to decide what a user may see of the history.
CREATE INDEX events_state_history ON events (room_id, type, state_key, stream_ordering)
    WHERE state_key IS NOT NULL;
