//! The server's ed25519 signing key, shared by every instance on the same database.

use sqlx::Row;

use super::Store;

impl Store {
    /// Stores `candidate` as the current key unless one exists, then returns the current key.
    pub async fn current_signing_key(
        &self,
        candidate_id: &str,
        candidate_pkcs8: &[u8],
        now_ms: i64,
    ) -> Result<(String, Vec<u8>), sqlx::Error> {
        sqlx::query(
            "INSERT INTO server_signing_keys (slot, key_id, pkcs8, created_ts) VALUES ('current', $1, $2, $3) \
             ON CONFLICT (slot) DO NOTHING",
        )
        .bind(candidate_id)
        .bind(candidate_pkcs8)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        let row =
            sqlx::query("SELECT key_id, pkcs8 FROM server_signing_keys WHERE slot = 'current'")
                .fetch_one(&self.pool)
                .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }
}
