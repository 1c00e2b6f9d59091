//! Accounts whose events are erased from the view of those who were not there.

use std::collections::HashSet;

use super::Store;

impl Store {
    /// Marks `user_id` erased (`erase: true` on deactivation).
    pub async fn erase_user(&self, user_id: &str, now_ms: i64) -> Result<(), sqlx::Error> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO erased_users (user_id, erased_ts) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Which of `users` are erased.
    pub async fn erased_among(&self, users: &[&str]) -> Result<HashSet<String>, sqlx::Error> {
        if users.is_empty() {
            return Ok(HashSet::new());
        }
        let mut found = HashSet::new();
        // A bounded number of binds per statement.
        for chunk in users.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT user_id FROM erased_users WHERE user_id IN ({})",
                marks.join(", ")
            );
            let mut query = sqlx::query_scalar::<_, String>(&sql);
            for user in chunk {
                query = query.bind(*user);
            }
            found.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(found)
    }
}
