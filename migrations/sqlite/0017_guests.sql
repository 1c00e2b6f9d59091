-- Guest accounts (`registration.guest_access`): no password, limited to reading and joining
-- rooms that allow guests, until upgraded by registering with the guest's access token.
ALTER TABLE users ADD COLUMN is_guest INTEGER NOT NULL DEFAULT 0;
