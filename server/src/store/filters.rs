//! Stored sync filters.

use super::Store;

impl Store {
    /// Stores a filter (JSON) for the user; its id.
    pub async fn insert_filter(&self, user_id: &str, json: &str) -> Result<i64, sqlx::Error> {
        // Two uploads at once may pick the same next id: the loser takes the one after.
        loop {
            let id: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(filter_id), 0) + 1 FROM filters WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?;
            let inserted = sqlx::query(
                "INSERT INTO filters (user_id, filter_id, json) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id, filter_id) DO NOTHING",
            )
            .bind(user_id)
            .bind(id)
            .bind(json)
            .execute(&self.pool)
            .await?;
            if inserted.rows_affected() == 1 {
                return Ok(id);
            }
        }
    }

    /// A stored filter (JSON).
    pub async fn filter(
        &self,
        user_id: &str,
        filter_id: i64,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT json FROM filters WHERE user_id = $1 AND filter_id = $2")
            .bind(user_id)
            .bind(filter_id)
            .fetch_optional(&self.pool)
            .await
    }
}
