//! Server-side key backup: versions and the encrypted room keys stored in them.

use sqlx::Row;

use super::Store;

/// One backup version.
#[derive(Clone, Debug)]
pub struct BackupVersionRow {
    /// The version, a number.
    pub version: i64,
    /// Algorithm name, e.g. `m.megolm_backup.v1.curve25519-aes-sha2`.
    pub algorithm: String,
    /// Algorithm-specific auth data, JSON text.
    pub auth_data: String,
    /// Changes whenever the version's keys change.
    pub etag: i64,
    /// How many keys the version holds.
    pub count: i64,
}

/// One backed-up session key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupKeyRow {
    /// The room.
    pub room_id: String,
    /// The megolm session.
    pub session_id: String,
    /// First message index the key can decrypt.
    pub first_message_index: i64,
    /// How many times the key was forwarded.
    pub forwarded_count: i64,
    /// Whether the device that backed it up verified its sender.
    pub is_verified: bool,
    /// The encrypted session data, JSON text.
    pub session_data: String,
}

impl BackupKeyRow {
    /// The spec's order: verified beats unverified, then a lower first message index, then
    /// fewer forwards. A stored key is replaced only by a strictly better one.
    pub fn better_than(&self, other: &Self) -> bool {
        (
            self.is_verified,
            -self.first_message_index,
            -self.forwarded_count,
        ) > (
            other.is_verified,
            -other.first_message_index,
            -other.forwarded_count,
        )
    }
}

/// Adds `by` to a version's etag (0 just locks its row); false when there is no such version.
async fn bump_etag(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user_id: &str,
    version: i64,
    by: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE backup_versions SET etag = etag + $3 WHERE user_id = $1 AND version = $2",
    )
    .bind(user_id)
    .bind(version)
    .bind(by)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

fn key_row(r: &sqlx::any::AnyRow) -> Result<BackupKeyRow, sqlx::Error> {
    Ok(BackupKeyRow {
        room_id: r.try_get(0)?,
        session_id: r.try_get(1)?,
        first_message_index: r.try_get(2)?,
        forwarded_count: r.try_get(3)?,
        is_verified: r.try_get::<i64, _>(4)? != 0,
        session_data: r.try_get(5)?,
    })
}

impl Store {
    /// Creates a backup version; versions are never reused, even after deletion.
    pub async fn create_backup_version(
        &self,
        user_id: &str,
        algorithm: &str,
        auth_data: &str,
    ) -> Result<i64, sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        let version = Self::next_position(&mut tx, "backup_versions").await?;
        sqlx::query(
            "INSERT INTO backup_versions (user_id, version, algorithm, auth_data, etag) \
             VALUES ($1, $2, $3, $4, 0)",
        )
        .bind(user_id)
        .bind(version)
        .bind(algorithm)
        .bind(auth_data)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    /// One version (the latest when `version` is None).
    pub async fn backup_version(
        &self,
        user_id: &str,
        version: Option<i64>,
    ) -> Result<Option<BackupVersionRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT v.version, v.algorithm, v.auth_data, v.etag, \
             (SELECT COUNT(*) FROM backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version) \
             FROM backup_versions v WHERE v.user_id = $1 AND ($2 < 0 OR v.version = $2) \
             ORDER BY v.version DESC LIMIT 1",
        )
        .bind(user_id)
        .bind(version.unwrap_or(-1))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(BackupVersionRow {
                version: r.try_get(0)?,
                algorithm: r.try_get(1)?,
                auth_data: r.try_get(2)?,
                etag: r.try_get(3)?,
                count: r.try_get(4)?,
            })
        })
        .transpose()
    }

    /// Replaces a version's auth data; false when there is no such version.
    pub async fn update_backup_version(
        &self,
        user_id: &str,
        version: i64,
        auth_data: &str,
    ) -> Result<bool, sqlx::Error> {
        let _writer = self.writer().await;
        let done = sqlx::query(
            "UPDATE backup_versions SET auth_data = $1 WHERE user_id = $2 AND version = $3",
        )
        .bind(auth_data)
        .bind(user_id)
        .bind(version)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a version and its keys; false when there is no such version.
    pub async fn delete_backup_version(
        &self,
        user_id: &str,
        version: i64,
    ) -> Result<bool, sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM backup_keys WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM backup_versions WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores keys in a version, each only where it beats the stored one; bumps the etag when
    /// anything changed. `None` when the version does not exist.
    pub async fn put_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        keys: &[BackupKeyRow],
    ) -> Result<Option<()>, sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        // Locks the version row (PostgreSQL) so concurrent uploads compare against each other.
        if !bump_etag(&mut tx, user_id, version, 0).await? {
            return Ok(None);
        }
        let mut changed = false;
        for key in keys {
            let stored = sqlx::query(
                "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, \
                 session_data FROM backup_keys \
                 WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
            )
            .bind(user_id)
            .bind(version)
            .bind(&key.room_id)
            .bind(&key.session_id)
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(key_row)
            .transpose()?;
            if stored.as_ref().is_some_and(|s| !key.better_than(s)) {
                continue;
            }
            sqlx::query(
                "INSERT INTO backup_keys (user_id, version, room_id, session_id, \
                 first_message_index, forwarded_count, is_verified, session_data) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET \
                 first_message_index = excluded.first_message_index, \
                 forwarded_count = excluded.forwarded_count, \
                 is_verified = excluded.is_verified, session_data = excluded.session_data",
            )
            .bind(user_id)
            .bind(version)
            .bind(&key.room_id)
            .bind(&key.session_id)
            .bind(key.first_message_index)
            .bind(key.forwarded_count)
            .bind(i64::from(key.is_verified))
            .bind(&key.session_data)
            .execute(&mut *tx)
            .await?;
            changed = true;
        }
        if changed {
            bump_etag(&mut tx, user_id, version, 1).await?;
        }
        tx.commit().await?;
        Ok(Some(()))
    }

    /// Keys of a version, narrowed to a room and a session when given.
    pub async fn backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Vec<BackupKeyRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, \
             session_data FROM backup_keys WHERE user_id = $1 AND version = $2 \
             AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4) \
             ORDER BY room_id, session_id",
        )
        .bind(user_id)
        .bind(version)
        .bind(room_id.unwrap_or(""))
        .bind(session_id.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_row).collect()
    }

    /// Deletes keys of a version (narrowed like [`Store::backup_keys`]) and bumps the etag;
    /// `None` when the version does not exist.
    pub async fn delete_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Option<()>, sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        if !bump_etag(&mut tx, user_id, version, 1).await? {
            return Ok(None);
        }
        sqlx::query(
            "DELETE FROM backup_keys WHERE user_id = $1 AND version = $2 \
             AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)",
        )
        .bind(user_id)
        .bind(version)
        .bind(room_id.unwrap_or(""))
        .bind(session_id.unwrap_or(""))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(()))
    }
}
