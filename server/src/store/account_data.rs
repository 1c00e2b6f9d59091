//! Account data (global and per room) and the stream positions that order its changes.

use sqlx::Row;

use super::Store;

impl Store {
    /// Sets one account-data entry (`room_id` empty for global) at a fresh stream position.
    pub async fn set_account_data(
        &self,
        user_id: &str,
        room_id: &str,
        kind: &str,
        content: &str,
    ) -> Result<i64, sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        let position = Self::next_position(&mut tx, "account_data").await?;
        sqlx::query(
            "INSERT INTO account_data (user_id, room_id, type, content, stream_id) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, room_id, type) \
             DO UPDATE SET content = excluded.content, stream_id = excluded.stream_id",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(kind)
        .bind(content)
        .bind(position)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(position)
    }

    /// One account-data entry's content (JSON text).
    pub async fn account_data(
        &self,
        user_id: &str,
        room_id: &str,
        kind: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3",
        )
        .bind(user_id)
        .bind(room_id)
        .bind(kind)
        .fetch_optional(&self.pool)
        .await
    }

    /// Entries changed in `(after, upto]`: `(room_id or "", type, content)`.
    pub async fn account_data_since(
        &self,
        user_id: &str,
        after: i64,
        upto: i64,
    ) -> Result<Vec<(String, String, serde_json::Value)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT room_id, type, content FROM account_data WHERE user_id = $1 \
             AND stream_id > $2 AND stream_id <= $3 ORDER BY stream_id",
        )
        .bind(user_id)
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let content: String = row.try_get(2)?;
                Ok((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    serde_json::from_str(&content).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                ))
            })
            .collect()
    }

    /// The latest account-data position.
    pub async fn max_account_data_stream(&self) -> Result<i64, sqlx::Error> {
        self.stream_position("account_data").await
    }
}
