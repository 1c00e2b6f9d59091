-- OpenID tokens (`/user/{userId}/openid/request_token`): a widget's backend exchanges one for
-- the user's id at `/_matrix/federation/v1/openid/userinfo`. Stored hashed, as access tokens.
CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);
