-- Ethereum addresses (lower-case 0x hex) linked to accounts. A wallet belongs to one account.
CREATE TABLE wallets (
    address    TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    linked_ts  BIGINT NOT NULL
);
CREATE INDEX wallets_user ON wallets (user_id);
