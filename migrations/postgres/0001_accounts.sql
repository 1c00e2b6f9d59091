-- Accounts, devices and the secrets handed to clients (stored only as SHA-256 hashes).

-- `slot` is 'current' for the key in use; concurrent first starts agree on one key.
CREATE TABLE server_signing_keys (
    slot        TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,
    pkcs8       BYTEA NOT NULL,
    created_ts  BIGINT NOT NULL
);

CREATE TABLE users (
    user_id        TEXT PRIMARY KEY,
    localpart      TEXT NOT NULL UNIQUE,
    password_hash  TEXT,
    is_admin       BIGINT NOT NULL DEFAULT 0,
    deactivated    BIGINT NOT NULL DEFAULT 0,
    created_ts     BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id       TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    device_id     TEXT NOT NULL,
    display_name  TEXT,
    last_seen_ip  TEXT,
    last_seen_ts  BIGINT,
    created_ts    BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    created_ts  BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);

CREATE TABLE access_tokens (
    token_hash          TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL,
    device_id           TEXT NOT NULL,
    refresh_token_hash  TEXT REFERENCES refresh_tokens (token_hash) ON DELETE CASCADE,
    expires_ts          BIGINT,
    created_ts          BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE login_tokens (
    token_hash  TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    expires_ts  BIGINT NOT NULL
);

CREATE TABLE registration_tokens (
    token         TEXT PRIMARY KEY,
    uses_allowed  BIGINT,
    completed     BIGINT NOT NULL DEFAULT 0,
    expires_ts    BIGINT,
    created_ts    BIGINT NOT NULL
);

CREATE TABLE uia_sessions (
    session_id  TEXT PRIMARY KEY,
    operation   TEXT NOT NULL,
    user_id     TEXT,
    completed   TEXT NOT NULL,
    expires_ts  BIGINT NOT NULL
);

-- Single-use nonces of any kind (shared-secret registration now, SIWE later).
CREATE TABLE nonces (
    kind        TEXT NOT NULL,
    nonce       TEXT NOT NULL,
    expires_ts  BIGINT NOT NULL,
    PRIMARY KEY (kind, nonce)
);
