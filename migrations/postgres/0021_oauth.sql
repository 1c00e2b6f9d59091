-- The OAuth 2.0 API (Matrix spec v1.15, built in): clients registered dynamically, the
-- authorization codes the authorize page hands them, browser sign-ins on that page, which
-- client each session belongs to, and spent refresh tokens (a replay ends the session).
CREATE TABLE oauth_clients (
    client_id  TEXT PRIMARY KEY,
    -- The registration as accepted (JSON): names, URIs and redirect URIs shown and checked.
    metadata   TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE TABLE oauth_codes (
    code_hash      TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    scope          TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    expires_ts     BIGINT NOT NULL
);
CREATE INDEX oauth_codes_expiry ON oauth_codes (expires_ts);
CREATE TABLE oauth_browser_sessions (
    session_hash TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    expires_ts   BIGINT NOT NULL
);
CREATE INDEX oauth_browser_sessions_expiry ON oauth_browser_sessions (expires_ts);
CREATE TABLE oauth_sessions (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    scope     TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
CREATE TABLE oauth_spent_refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    spent_ts   BIGINT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX oauth_spent_refresh_tokens_expiry ON oauth_spent_refresh_tokens (expires_ts);
-- The device authorization grant (RFC 8628): a device shows the user code, the user approves it
-- on the device page, the device polls with the device code (stored hashed).
CREATE TABLE oauth_device_grants (
    device_code_hash TEXT PRIMARY KEY,
    user_code        TEXT NOT NULL UNIQUE,
    client_id        TEXT NOT NULL,
    scope            TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    -- pending, approved or denied
    status           TEXT NOT NULL,
    user_id          TEXT,
    last_poll_ts     BIGINT NOT NULL,
    expires_ts       BIGINT NOT NULL
);
CREATE INDEX oauth_device_grants_expiry ON oauth_device_grants (expires_ts);
-- A cross-signing reset the user approved on the account page (MSC4312's m.oauth stage):
-- the next replacement of the cross-signing keys within ten minutes needs no other proof.
CREATE TABLE oauth_cross_signing_resets (
    user_id    TEXT PRIMARY KEY,
    expires_ts BIGINT NOT NULL
);
