//! To-device messages: queued per device, delivered by sync, deleted once acknowledged.

use sqlx::Row;

use super::Store;

/// One queued message as sync delivers it.
#[derive(Clone, Debug)]
pub struct ToDeviceRow {
    /// Its position in the to-device stream.
    pub stream_id: i64,
    /// Who sent it.
    pub sender: String,
    /// The event type.
    pub kind: String,
    /// The content, JSON text.
    pub content: String,
}

impl Store {
    /// Queues messages (`(user, device or "*", content)`) of one type from one sender, once per
    /// `(sender device, txn_id)`: false when that transaction was already handled. Messages
    /// for devices that do not exist are dropped, as the spec allows.
    pub async fn queue_to_device(
        &self,
        (sender, sender_device, txn_id): (&str, &str, &str),
        kind: &str,
        messages: &[(String, String, String)],
    ) -> Result<(bool, Vec<String>), sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO to_device_txns (user_id, device_id, txn_id) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, device_id, txn_id) DO NOTHING",
        )
        .bind(sender)
        .bind(sender_device)
        .bind(txn_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            return Ok((false, Vec::new()));
        }
        let recipients = Self::insert_to_device(&mut tx, sender, kind, messages).await?;
        tx.commit().await?;
        Ok((true, recipients))
    }

    /// [`Store::queue_to_device`] for messages from another server's user, kept once per
    /// sender and `message_id`.
    pub async fn queue_remote_to_device(
        &self,
        (sender, message_id): (&str, &str),
        kind: &str,
        messages: &[(String, String, String)],
        now_ms: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO to_device_inbox_seen (sender, message_id, received_ts) \
             VALUES ($1, $2, $3) ON CONFLICT (sender, message_id) DO NOTHING",
        )
        .bind(sender)
        .bind(message_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            return Ok(Vec::new());
        }
        let recipients = Self::insert_to_device(&mut tx, sender, kind, messages).await?;
        tx.commit().await?;
        Ok(recipients)
    }

    /// Forgets which remote messages arrived before `before_ms`.
    pub async fn prune_to_device_inbox_seen(&self, before_ms: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM to_device_inbox_seen WHERE received_ts < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Stores `messages` for their devices (`*`: every device of the user); the users they
    /// reached.
    async fn insert_to_device(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        sender: &str,
        kind: &str,
        messages: &[(String, String, String)],
    ) -> Result<Vec<String>, sqlx::Error> {
        let mut recipients: Vec<String> = Vec::new();
        for (user_id, device_id, content) in messages {
            let devices: Vec<String> = if device_id == "*" {
                sqlx::query_scalar("SELECT device_id FROM devices WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_all(&mut **tx)
                    .await?
            } else {
                sqlx::query_scalar(
                    "SELECT device_id FROM devices WHERE user_id = $1 AND device_id = $2",
                )
                .bind(user_id)
                .bind(device_id)
                .fetch_all(&mut **tx)
                .await?
            };
            for device in devices {
                let position = Self::next_position(tx, "to_device").await?;
                sqlx::query(
                    "INSERT INTO to_device_messages \
                     (user_id, device_id, stream_id, sender, type, content) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(user_id)
                .bind(&device)
                .bind(position)
                .bind(sender)
                .bind(kind)
                .bind(content)
                .execute(&mut **tx)
                .await?;
                if !recipients.contains(user_id) {
                    recipients.push(user_id.clone());
                }
            }
        }
        Ok(recipients)
    }

    /// Deletes a device's messages up to `upto`: the client acknowledged them by syncing on.
    pub async fn ack_to_device(
        &self,
        user_id: &str,
        device_id: &str,
        upto: i64,
    ) -> Result<(), sqlx::Error> {
        let _writer = self.writer().await;
        sqlx::query(
            "DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(upto)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A device's messages after `after`, oldest first, at most `limit`.
    pub async fn to_device_after(
        &self,
        user_id: &str,
        device_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ToDeviceRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT stream_id, sender, type, content FROM to_device_messages \
             WHERE user_id = $1 AND device_id = $2 AND stream_id > $3 ORDER BY stream_id LIMIT $4",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ToDeviceRow {
                    stream_id: r.try_get(0)?,
                    sender: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    content: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// The latest to-device position.
    pub async fn max_to_device_stream(&self) -> Result<i64, sqlx::Error> {
        self.stream_position("to_device").await
    }
}
