//! The server's ed25519 signing key, shared by every instance on the same database.

use sqlx::Row;

use super::Store;

impl Store {
    /// Stores `candidate` as the current key unless one exists, then returns the current key.
    pub async fn current_signing_key(
        &self,
        candidate_id: &str,
        candidate_pkcs8: &[u8],
        now_ms: i64,
    ) -> Result<(String, Vec<u8>), sqlx::Error> {
        sqlx::query(
            "INSERT INTO server_signing_keys (slot, key_id, pkcs8, created_ts) VALUES ('current', $1, $2, $3) \
             ON CONFLICT (slot) DO NOTHING",
        )
        .bind(candidate_id)
        .bind(candidate_pkcs8)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        let row =
            sqlx::query("SELECT key_id, pkcs8 FROM server_signing_keys WHERE slot = 'current'")
                .fetch_one(&self.pool)
                .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }
}

/// One of another server's keys as this server knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteKey {
    /// `ed25519:…`.
    pub key_id: String,
    /// Unpadded base64.
    pub public_key: String,
    /// Until when the server said the key may be used.
    pub valid_until_ts: i64,
    /// When the server retired it (it still verifies what was signed before).
    pub expired_ts: Option<i64>,
}

impl Store {
    /// The keys of `server_name` fetched so far.
    pub async fn remote_server_keys(
        &self,
        server_name: &str,
    ) -> Result<Vec<RemoteKey>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT key_id, public_key, valid_until_ts, expired_ts FROM remote_server_keys \
             WHERE server_name = $1",
        )
        .bind(server_name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RemoteKey {
                    key_id: row.try_get(0)?,
                    public_key: row.try_get(1)?,
                    valid_until_ts: row.try_get(2)?,
                    expired_ts: row.try_get(3)?,
                })
            })
            .collect()
    }

    /// Records keys of `server_name`; a key's validity only ever grows, and a retired key
    /// stays retired.
    pub async fn store_remote_server_keys(
        &self,
        server_name: &str,
        keys: &[RemoteKey],
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        for key in keys {
            sqlx::query(
                "INSERT INTO remote_server_keys \
                 (server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (server_name, key_id) DO UPDATE SET \
                 valid_until_ts = CASE WHEN excluded.valid_until_ts > remote_server_keys.valid_until_ts \
                     THEN excluded.valid_until_ts ELSE remote_server_keys.valid_until_ts END, \
                 expired_ts = COALESCE(remote_server_keys.expired_ts, excluded.expired_ts), \
                 fetched_ts = excluded.fetched_ts \
                 WHERE remote_server_keys.public_key = excluded.public_key",
            )
            .bind(server_name)
            .bind(&key.key_id)
            .bind(&key.public_key)
            .bind(key.valid_until_ts)
            .bind(key.expired_ts)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }
}
