-- Vaults (delegate.xyz) seen delegating to a member's wallet when a gate was checked, so
-- that the vault's transfers and delegation changes re-check that member. Rows not seen
-- again for 31 days (longer than any re-check interval) are pruned.
CREATE TABLE gate_vaults (
    vault    TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    seen_ms  BIGINT NOT NULL,
    PRIMARY KEY (vault, user_id)
);
CREATE INDEX gate_vaults_seen ON gate_vaults (seen_ms);

-- Expired nonces are pruned (unauthenticated endpoints create them).
CREATE INDEX nonces_expiry ON nonces (expires_ts);
