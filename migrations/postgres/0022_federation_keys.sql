-- Other servers' signing keys, as fetched from them or from a notary: the public key, until
-- when it may be used (valid_until_ts), and for keys a server has retired, when it stopped
-- (expired_ts; such a key still verifies what was signed before).
CREATE TABLE remote_server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
