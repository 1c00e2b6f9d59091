//! What a user's data export reads that nothing else does: every event they sent, and every
//! upload of theirs.

use futures_util::stream::{BoxStream, StreamExt};
use sqlx::Row;

use super::Store;

/// One upload, for an export.
#[derive(Clone, Debug)]
pub struct UploadRow {
    /// The media id (the server's own media).
    pub media_id: String,
    /// The content's SHA-256: where the file lives.
    pub sha256: String,
    /// Declared content type.
    pub content_type: Option<String>,
    /// Declared file name.
    pub filename: Option<String>,
    /// Bytes.
    pub size: i64,
    /// When, in ms since the epoch.
    pub created_ts: i64,
}

impl Store {
    /// Every event `user_id` sent, oldest first, as stored (JSON), read in one pass.
    pub fn events_sent_by<'a>(
        &'a self,
        user_id: &'a str,
    ) -> BoxStream<'a, Result<String, sqlx::Error>> {
        sqlx::query("SELECT json FROM events WHERE sender = $1 ORDER BY stream_ordering")
            .bind(user_id)
            .fetch(&self.pool)
            .map(|row| row.and_then(|row| row.try_get(0)))
            .boxed()
    }

    /// The user's completed uploads, oldest first.
    pub async fn uploads_by(&self, user_id: &str) -> Result<Vec<UploadRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT media_id, sha256, content_type, filename, size, created_ts FROM media \
             WHERE uploader = $1 AND sha256 IS NOT NULL ORDER BY created_ts",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(UploadRow {
                    media_id: row.try_get(0)?,
                    sha256: row.try_get(1)?,
                    content_type: row.try_get(2)?,
                    filename: row.try_get(3)?,
                    size: row.try_get(4)?,
                    created_ts: row.try_get(5)?,
                })
            })
            .collect()
    }
}
