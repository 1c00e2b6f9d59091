//! OpenID tokens, shared by every instance on the database.

use super::Store;

impl Store {
    /// Remembers an OpenID token (its hash) for `user_id` until `expires_ms`.
    pub async fn insert_openid_token(
        &self,
        token_hash: &str,
        user_id: &str,
        expires_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The user an unexpired OpenID token was issued to.
    pub async fn openid_user(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await
    }

    /// Forgets expired OpenID tokens.
    pub async fn prune_openid_tokens(&self, now_ms: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM openid_tokens WHERE expires_ts <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
