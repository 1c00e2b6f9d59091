//! What ENS last gave each wallet user's profile, and who is due a refresh.

use sqlx::Row;

use super::Store;

impl Store {
    /// The display name ENS last gave `user_id` (outer `None`: never refreshed).
    pub async fn ens_profile(&self, user_id: &str) -> Result<Option<Option<String>>, sqlx::Error> {
        let row = sqlx::query("SELECT displayname FROM ens_profiles WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| row.try_get(0)).transpose()
    }

    /// Records what ENS gave `user_id` now.
    pub async fn set_ens_profile(
        &self,
        user_id: &str,
        displayname: Option<&str>,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO ens_profiles (user_id, displayname, refreshed_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET displayname = $2, refreshed_ms = $3",
        )
        .bind(user_id)
        .bind(displayname)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Users with a wallet whose ENS profile was last refreshed before `before_ms` (or never).
    pub async fn ens_profiles_due(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT DISTINCT w.user_id FROM wallets w \
             LEFT JOIN ens_profiles p ON p.user_id = w.user_id \
             WHERE p.refreshed_ms IS NULL OR p.refreshed_ms < $1 ORDER BY w.user_id LIMIT $2",
        )
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }
}
