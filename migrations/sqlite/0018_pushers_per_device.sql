-- Pushers belong to the device that set them (Synapse ties them to the access token): they
-- go when that device is deleted or logged out, and on a password change that logs out the
-- other devices. Pushers set before this migration have none and stay until removed.
ALTER TABLE pushers ADD COLUMN device_id TEXT;
