-- The display name each wallet user last got from their ENS primary name: a display name
-- that still equals it was never changed by the user, so the next refresh may replace it.
CREATE TABLE ens_profiles (
    user_id       TEXT PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    displayname   TEXT,
    refreshed_ms  INTEGER NOT NULL
);

-- Wallet accounts created for an invite by name before the wallet ever signed in. The first
-- sign-in claims the account; until then, linking the wallet to another account releases it.
CREATE TABLE reserved_accounts (
    user_id      TEXT PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    reserved_ms  INTEGER NOT NULL
);
