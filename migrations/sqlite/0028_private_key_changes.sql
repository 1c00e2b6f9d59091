-- A device-list change only one user is told of: a new user-signing key (its owner's), a
-- signature on another user's key (the signer's). Spec: those are private to that user.
ALTER TABLE device_list_changes ADD COLUMN only_for TEXT;
