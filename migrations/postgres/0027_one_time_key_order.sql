-- One-time keys are claimed in the order they were uploaded (MSC4225, spec v1.13): each upload
-- gets the next number of its device; keys stored before this have 0, so they go first.
ALTER TABLE one_time_keys ADD COLUMN upload_seq BIGINT NOT NULL DEFAULT 0;
