-- A registration's parameters remembered across its UIA steps (clients may send them only
-- with the first request, as Synapse allows; the password kept only as its hash), and the
-- account it made: replaying a completed registration's session signs in to that account
-- again instead of failing (registration is idempotent, as on Synapse).
CREATE TABLE registration_sessions (
    session_id  TEXT PRIMARY KEY,
    params      TEXT NOT NULL,
    user_id     TEXT,
    expires_ts  INTEGER NOT NULL
);
