-- Rooms whose io.matrixon.room.roles map holdings to power levels are swept like gated
-- rooms: a row of gate_rooms exists while the room has a gate (content), roles, or both
-- (an empty string stands for the one it lacks).
ALTER TABLE gate_rooms ADD COLUMN roles TEXT NOT NULL DEFAULT '';

-- Payments that `paid` rule leaves are judged on: found in ERC-20 Transfer logs of gated
-- tokens, or submitted by their payer as a transaction hash and checked on chain. One row per
-- transfer (log_index -1 for the coin a transaction sent). Amounts are decimal strings.
CREATE TABLE gate_payments (
    chain       BIGINT NOT NULL,
    tx_hash     TEXT NOT NULL,
    log_index   BIGINT NOT NULL,
    token       TEXT NOT NULL,
    payer       TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    amount      TEXT NOT NULL,
    paid_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (chain, tx_hash, log_index)
);
CREATE INDEX gate_payments_payer ON gate_payments (payer, paid_at_ms);
