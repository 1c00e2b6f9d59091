//! Read receipts, ordered by their own stream.

use sqlx::Row;

use super::Store;

/// One receipt as stored.
#[derive(Clone, Debug)]
pub struct ReceiptRow {
    /// The room.
    pub room_id: String,
    /// Whose receipt.
    pub user_id: String,
    /// `m.read` or `m.read.private`.
    pub kind: String,
    /// `main`, a thread root, or "" for unthreaded.
    pub thread_id: String,
    /// The event read up to.
    pub event_id: String,
    /// When.
    pub ts: i64,
}

impl Store {
    /// Sets a receipt, replacing the user's previous one of that type and thread unless that
    /// one is for a later event: receipts only move forward (as Synapse).
    pub async fn set_receipt(&self, receipt: &ReceiptRow) -> Result<i64, sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        let position = Self::next_position(&mut tx, "receipts").await?;
        sqlx::query(
            "INSERT INTO receipts (room_id, user_id, type, thread_id, event_id, ts, stream_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (room_id, user_id, type, thread_id) \
             DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, stream_id = excluded.stream_id \
             WHERE COALESCE((SELECT stream_ordering FROM events WHERE event_id = excluded.event_id), 0) \
             >= COALESCE((SELECT stream_ordering FROM events WHERE event_id = receipts.event_id), 0)",
        )
        .bind(&receipt.room_id)
        .bind(&receipt.user_id)
        .bind(&receipt.kind)
        .bind(&receipt.thread_id)
        .bind(&receipt.event_id)
        .bind(receipt.ts)
        .bind(position)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(position)
    }

    /// Receipts of a room changed in `(after, upto]`.
    pub async fn receipts_since(
        &self,
        room_id: &str,
        after: i64,
        upto: i64,
    ) -> Result<Vec<ReceiptRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT room_id, user_id, type, thread_id, event_id, ts FROM receipts \
             WHERE room_id = $1 AND stream_id > $2 AND stream_id <= $3",
        )
        .bind(room_id)
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ReceiptRow {
                    room_id: row.try_get(0)?,
                    user_id: row.try_get(1)?,
                    kind: row.try_get(2)?,
                    thread_id: row.try_get(3)?,
                    event_id: row.try_get(4)?,
                    ts: row.try_get(5)?,
                })
            })
            .collect()
    }

    /// The rooms where the user's own receipts moved in `(after, upto]` (their unread
    /// counts changed with them).
    pub async fn rooms_read_by(
        &self,
        user_id: &str,
        after: i64,
        upto: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT DISTINCT room_id FROM receipts \
             WHERE stream_id > $2 AND stream_id <= $3 AND user_id = $1",
        )
        .bind(user_id)
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await
    }

    /// The latest receipt position.
    pub async fn max_receipt_stream(&self) -> Result<i64, sqlx::Error> {
        self.stream_position("receipts").await
    }
}
