//! Gated rooms: their current gate and re-check schedule, failing members, the audit log.

use sqlx::Row;

use super::Store;

/// One audit log entry.
#[derive(Clone, Debug)]
pub struct GateAuditRow {
    /// Position in the log.
    pub id: i64,
    /// When, in ms since the epoch.
    pub ts_ms: i64,
    /// The room.
    pub room_id: String,
    /// The user decided about.
    pub user_id: String,
    /// `allowed`, `refused`, `kicked`, `unavailable`.
    pub decision: String,
    /// JSON object: chain → block number.
    pub blocks: String,
    /// JSON: failing leaves or the chain error.
    pub detail: String,
}

/// One recorded payment (addresses lower-case hex, the token empty for the coin).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRow {
    /// EIP-155 chain id.
    pub chain: i64,
    /// The transaction.
    pub tx_hash: String,
    /// The log within it; -1 for the coin the transaction sent.
    pub log_index: i64,
    /// The ERC-20 token, or empty for the coin.
    pub token: String,
    /// Who paid.
    pub payer: String,
    /// Who was paid.
    pub recipient: String,
    /// Base units, a decimal string.
    pub amount: String,
    /// The block's time.
    pub paid_at_ms: i64,
}

impl Store {
    /// Records a payment; false when it was recorded before.
    pub async fn record_payment(&self, payment: &PaymentRow) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "INSERT INTO gate_payments \
             (chain, tx_hash, log_index, token, payer, recipient, amount, paid_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (chain, tx_hash, log_index) DO NOTHING",
        )
        .bind(payment.chain)
        .bind(&payment.tx_hash)
        .bind(payment.log_index)
        .bind(&payment.token)
        .bind(&payment.payer)
        .bind(&payment.recipient)
        .bind(&payment.amount)
        .bind(payment.paid_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Payments by `payer` (lower-case hex) made at or after `since_ms`, newest first.
    pub async fn payments_by(
        &self,
        payer: &str,
        since_ms: i64,
    ) -> Result<Vec<PaymentRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT chain, tx_hash, log_index, token, payer, recipient, amount, paid_at_ms \
             FROM gate_payments WHERE payer = $1 AND paid_at_ms >= $2 \
             ORDER BY paid_at_ms DESC LIMIT 1000",
        )
        .bind(payer)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PaymentRow {
                    chain: row.try_get(0)?,
                    tx_hash: row.try_get(1)?,
                    log_index: row.try_get(2)?,
                    token: row.try_get(3)?,
                    payer: row.try_get(4)?,
                    recipient: row.try_get(5)?,
                    amount: row.try_get(6)?,
                    paid_at_ms: row.try_get(7)?,
                })
            })
            .collect()
    }

    /// Records a room's new gate content and makes the room due at `next_check_ms`; failures
    /// recorded under the old gate are forgotten (the new one starts its own grace periods).
    pub async fn set_gate_room(
        &self,
        room_id: &str,
        content: &str,
        next_check_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO gate_rooms (room_id, content, next_check_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (room_id) DO UPDATE SET content = $2, next_check_ms = $3",
        )
        .bind(room_id)
        .bind(content)
        .bind(next_check_ms)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM gate_failures WHERE room_id = $1")
            .bind(room_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets a room's gate (its gate was removed) and its failing members; the room stays
    /// scheduled while it has roles.
    pub async fn remove_gate_room(&self, room_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE gate_rooms SET content = '' WHERE room_id = $1")
            .bind(room_id)
            .execute(&self.pool)
            .await?;
        self.drop_empty_gate_room(room_id).await?;
        sqlx::query("DELETE FROM gate_failures WHERE room_id = $1")
            .bind(room_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a room's new roles content and makes the room due at `next_check_ms`.
    pub async fn set_role_room(
        &self,
        room_id: &str,
        roles: &str,
        next_check_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO gate_rooms (room_id, content, roles, next_check_ms) \
             VALUES ($1, '', $2, $3) \
             ON CONFLICT (room_id) DO UPDATE SET roles = $2, next_check_ms = $3",
        )
        .bind(room_id)
        .bind(roles)
        .bind(next_check_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets a room's roles; the room stays scheduled while it has a gate.
    pub async fn remove_role_room(&self, room_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE gate_rooms SET roles = '' WHERE room_id = $1")
            .bind(room_id)
            .execute(&self.pool)
            .await?;
        self.drop_empty_gate_room(room_id).await
    }

    async fn drop_empty_gate_room(&self, room_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM gate_rooms WHERE room_id = $1 AND content = '' AND roles = ''")
            .bind(room_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every gated room or room with roles: `(room, gate content, roles content)`, either
    /// content empty when the room lacks it.
    pub async fn gate_rooms(&self) -> Result<Vec<(String, String, String)>, sqlx::Error> {
        let rows = sqlx::query("SELECT room_id, content, roles FROM gate_rooms ORDER BY room_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect()
    }

    /// Rooms due for a re-check at `now_ms` and not being swept: `(room, next_check_ms as read)`.
    pub async fn due_gate_rooms(&self, now_ms: i64) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT room_id, next_check_ms FROM gate_rooms \
             WHERE next_check_ms <= $1 AND sweeping_until_ms <= $1 \
             ORDER BY next_check_ms LIMIT 100",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// Claims a due room for this instance: its next check moves from `seen` to `next` and a
    /// lease runs until `lease_until`; false when another instance claimed it first.
    pub async fn claim_gate_room(
        &self,
        room_id: &str,
        seen: i64,
        next: i64,
        now_ms: i64,
        lease_until: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE gate_rooms SET next_check_ms = $3, sweeping_until_ms = $5 \
             WHERE room_id = $1 AND next_check_ms = $2 AND sweeping_until_ms <= $4",
        )
        .bind(room_id)
        .bind(seen)
        .bind(next)
        .bind(now_ms)
        .bind(lease_until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends this instance's sweep of a room; `next_check_ms`, when given, replaces the
    /// schedule (a sooner retry after the chain could not be asked).
    pub async fn release_gate_room(
        &self,
        room_id: &str,
        next_check_ms: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        match next_check_ms {
            Some(next) => {
                sqlx::query(
                    "UPDATE gate_rooms SET sweeping_until_ms = 0, next_check_ms = $2 \
                     WHERE room_id = $1",
                )
                .bind(room_id)
                .bind(next)
                .execute(&self.pool)
                .await?
            }
            None => {
                sqlx::query("UPDATE gate_rooms SET sweeping_until_ms = 0 WHERE room_id = $1")
                    .bind(room_id)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(())
    }

    /// Makes a gated room due now (a relevant transfer was seen).
    pub async fn make_gate_room_due(&self, room_id: &str, now_ms: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE gate_rooms SET next_check_ms = $2 WHERE room_id = $1 AND next_check_ms > $2",
        )
        .bind(room_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Since when the user has been failing the room's gate, recording `now_ms` when new.
    pub async fn gate_failing_since(
        &self,
        room_id: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<i64, sqlx::Error> {
        sqlx::query(
            "INSERT INTO gate_failures (room_id, user_id, failing_since_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (room_id, user_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        sqlx::query_scalar(
            "SELECT failing_since_ms FROM gate_failures WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_one(&self.pool)
        .await
    }

    /// The user passes (or left): no longer failing.
    pub async fn clear_gate_failure(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM gate_failures WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Appends to the audit log.
    pub async fn gate_audit(
        &self,
        ts_ms: i64,
        room_id: &str,
        user_id: &str,
        decision: &str,
        blocks: &str,
        detail: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO gate_audit (ts_ms, room_id, user_id, decision, blocks, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(ts_ms)
        .bind(room_id)
        .bind(user_id)
        .bind(decision)
        .bind(blocks)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Audit entries, newest first, before `before` (an id), optionally of one room.
    pub async fn gate_audit_log(
        &self,
        room_id: Option<&str>,
        before: i64,
        limit: i64,
    ) -> Result<Vec<GateAuditRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, ts_ms, room_id, user_id, decision, blocks, detail FROM gate_audit \
             WHERE id < $1 AND ($2 = '' OR room_id = $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(before)
        .bind(room_id.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(GateAuditRow {
                    id: row.try_get(0)?,
                    ts_ms: row.try_get(1)?,
                    room_id: row.try_get(2)?,
                    user_id: row.try_get(3)?,
                    decision: row.try_get(4)?,
                    blocks: row.try_get(5)?,
                    detail: row.try_get(6)?,
                })
            })
            .collect()
    }

    /// Remembers that `vaults` delegate to one of `user_id`'s wallets, seen at `now_ms`.
    pub async fn remember_gate_vaults(
        &self,
        user_id: &str,
        vaults: &[String],
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        for vault in vaults {
            sqlx::query(
                "INSERT INTO gate_vaults (vault, user_id, seen_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (vault, user_id) DO UPDATE SET seen_ms = excluded.seen_ms",
            )
            .bind(vault)
            .bind(user_id)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// The users a vault (lower-case hex) was seen delegating to.
    pub async fn gate_vault_delegates(&self, vault: &str) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT user_id FROM gate_vaults WHERE vault = $1 ORDER BY user_id")
            .bind(vault)
            .fetch_all(&self.pool)
            .await
    }

    /// Forgets vaults last seen before `before_ms`; how many went.
    pub async fn prune_gate_vaults(&self, before_ms: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM gate_vaults WHERE seen_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
