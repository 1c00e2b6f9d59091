//! Single-use nonces, so that every instance sharing the database honours "use once".

use sqlx::Row;

use super::Store;

impl Store {
    /// Remembers a fresh nonce of `kind` until `expires_ms`.
    pub async fn insert_nonce(
        &self,
        kind: &str,
        nonce: &str,
        expires_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO nonces (kind, nonce, expires_ts) VALUES ($1, $2, $3)")
            .bind(kind)
            .bind(nonce)
            .bind(expires_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Consumes a nonce: true only the first time, and only before it expires.
    pub async fn take_nonce(
        &self,
        kind: &str,
        nonce: &str,
        now_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let row =
            sqlx::query("DELETE FROM nonces WHERE kind = $1 AND nonce = $2 RETURNING expires_ts")
                .bind(kind)
                .bind(nonce)
                .fetch_optional(&self.pool)
                .await?;
        self.prune_nonces(now_ms).await?;
        Ok(match row {
            Some(row) => row.try_get::<i64, _>(0)? > now_ms,
            None => false,
        })
    }

    /// Deletes nonces expired at `now_ms` (never used ones included); how many went.
    pub async fn prune_nonces(&self, now_ms: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM nonces WHERE expires_ts < $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
