-- Notifications are pruned by age (read ones, and those of users no longer in the room):
-- the pass finds old rows by their time.
CREATE INDEX event_push_actions_ts ON event_push_actions (ts);
