//! The media repository's rows: media IDs mapped to content-addressed files, and thumbnails.

use sqlx::Row;

use super::{Backend, Store};

/// One media item.
#[derive(Clone, Debug)]
pub struct MediaRow {
    /// The file's SHA-256 (hex); `None` while an asynchronous upload is pending.
    pub sha256: Option<String>,
    /// As the uploader declared it.
    pub content_type: Option<String>,
    /// As the uploader named it.
    pub filename: Option<String>,
    /// Bytes.
    pub size: i64,
    /// Who created it.
    pub uploader: String,
    /// When a pending asynchronous upload becomes void (ms since the epoch).
    pub unused_expires_ms: Option<i64>,
}

impl Store {
    /// Records an uploaded file under a new media ID.
    pub async fn insert_media(
        &self,
        media_id: &str,
        row: &MediaRow,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        self.put_media(media_id, row, now_ms, "").await
    }

    /// Records a file under `media_id` unless a row is there already (another server's
    /// media, fetched by two requests at once).
    pub async fn insert_media_if_absent(
        &self,
        media_id: &str,
        row: &MediaRow,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        self.put_media(media_id, row, now_ms, " ON CONFLICT (media_id) DO NOTHING")
            .await
    }

    async fn put_media(
        &self,
        media_id: &str,
        row: &MediaRow,
        now_ms: i64,
        on_conflict: &str,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO media (media_id, sha256, content_type, filename, size, uploader, \
             created_ts, unused_expires_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8){on_conflict}"
        );
        sqlx::query(&sql)
            .bind(media_id)
            .bind(row.sha256.as_deref())
            .bind(row.content_type.as_deref())
            .bind(row.filename.as_deref())
            .bind(row.size)
            .bind(&row.uploader)
            .bind(now_ms)
            .bind(row.unused_expires_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Fills a pending asynchronous upload; false when it was filled meanwhile or lapsed.
    pub async fn complete_media(
        &self,
        media_id: &str,
        sha256: &str,
        (content_type, filename): (Option<&str>, Option<&str>),
        size: i64,
        now_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE media SET sha256 = $1, content_type = $2, filename = $3, size = $4, \
             unused_expires_ts = NULL WHERE media_id = $5 AND sha256 IS NULL \
             AND unused_expires_ts > $6",
        )
        .bind(sha256)
        .bind(content_type)
        .bind(filename)
        .bind(size)
        .bind(media_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One media item.
    pub async fn media(&self, media_id: &str) -> Result<Option<MediaRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT sha256, content_type, filename, size, uploader, unused_expires_ts \
             FROM media WHERE media_id = $1",
        )
        .bind(media_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(MediaRow {
                sha256: r.try_get(0)?,
                content_type: r.try_get(1)?,
                filename: r.try_get(2)?,
                size: r.try_get(3)?,
                uploader: r.try_get(4)?,
                unused_expires_ms: r.try_get(5)?,
            })
        })
        .transpose()
    }

    /// Reserves a media ID for a later upload unless `uploader` already holds `max` live
    /// reservations; whether it was made. Counted and inserted as one step, so concurrent
    /// requests cannot pass the cap together.
    pub async fn reserve_media(
        &self,
        media_id: &str,
        uploader: &str,
        (now_ms, expires_ms): (i64, i64),
        max: i64,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        if self.backend == Backend::Postgres {
            // Under READ COMMITTED two inserts would each count without the other's row.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('media.reserve'), hashtext($1))")
                .bind(uploader)
                .execute(&mut *tx)
                .await?;
        }
        // SQLite: an INSERT takes the one write lock before it reads.
        let made = sqlx::query(
            "INSERT INTO media (media_id, sha256, content_type, filename, size, uploader, \
             created_ts, unused_expires_ts) SELECT $1, NULL, NULL, NULL, 0, $2, $3, $4 \
             WHERE (SELECT COUNT(*) FROM media WHERE uploader = $2 AND sha256 IS NULL \
             AND unused_expires_ts > $3) < $5",
        )
        .bind(media_id)
        .bind(uploader)
        .bind(now_ms)
        .bind(expires_ms)
        .bind(max)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(made == 1)
    }

    /// A stored thumbnail: `(sha256, content_type)`.
    pub async fn thumbnail(
        &self,
        media_id: &str,
        (width, height): (u32, u32),
        method: &str,
    ) -> Result<Option<(String, String)>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT sha256, content_type FROM media_thumbnails WHERE media_id = $1 \
             AND width = $2 AND height = $3 AND method = $4",
        )
        .bind(media_id)
        .bind(i64::from(width))
        .bind(i64::from(height))
        .bind(method)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    /// Records a thumbnail (a concurrent request may have made the same one: kept).
    pub async fn insert_thumbnail(
        &self,
        media_id: &str,
        (width, height): (u32, u32),
        method: &str,
        (sha256, content_type): (&str, &str),
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO media_thumbnails (media_id, width, height, method, sha256, content_type) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (media_id, width, height, method) DO NOTHING",
        )
        .bind(media_id)
        .bind(i64::from(width))
        .bind(i64::from(height))
        .bind(method)
        .bind(sha256)
        .bind(content_type)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
