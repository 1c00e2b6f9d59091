//! The `devices` table: one row per logged-in client.

use ruma::{DeviceId, OwnedDeviceId, UserId};
use sqlx::Row;

use super::Store;

/// One device as clients see it.
#[derive(Clone, Debug)]
pub struct DeviceRow {
    /// The device ID.
    pub device_id: OwnedDeviceId,
    /// Name chosen by the user or client.
    pub display_name: Option<String>,
    /// Address of the last request.
    pub last_seen_ip: Option<String>,
    /// Time of the last request, ms since the epoch.
    pub last_seen_ms: Option<i64>,
}

fn device_row(row: &sqlx::any::AnyRow) -> Result<DeviceRow, sqlx::Error> {
    let id: String = row.try_get(0)?;
    Ok(DeviceRow {
        device_id: id.into(),
        display_name: row.try_get(1)?,
        last_seen_ip: row.try_get(2)?,
        last_seen_ms: row.try_get(3)?,
    })
}

impl Store {
    /// All devices of a user, oldest first.
    pub async fn devices(&self, user_id: &UserId) -> Result<Vec<DeviceRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT device_id, display_name, last_seen_ip, last_seen_ts FROM devices \
             WHERE user_id = $1 ORDER BY created_ts, device_id",
        )
        .bind(user_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_row).collect()
    }

    /// One device of a user.
    pub async fn device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<Option<DeviceRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT device_id, display_name, last_seen_ip, last_seen_ts FROM devices \
             WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(device_row).transpose()
    }

    /// Renames a device; false when the user has no such device.
    pub async fn set_device_display_name(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3",
        )
        .bind(display_name)
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes the given devices of a user with their tokens; unknown IDs are ignored.
    pub async fn delete_devices(
        &self,
        user_id: &UserId,
        device_ids: &[OwnedDeviceId],
    ) -> Result<(), sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        let mut deleted = 0;
        for device_id in device_ids {
            deleted += sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            // Its pushers go with it: a logged-out phone hears nothing more.
            sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND device_id = $2")
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .execute(&mut *tx)
                .await?;
            // Its sliding sync connections and OAuth records go too (a later device with the
            // same ID is another session).
            for table in [
                "sliding_sync_positions",
                "oauth_sessions",
                "oauth_spent_refresh_tokens",
            ] {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE user_id = $1 AND device_id = $2"
                ))
                .bind(user_id.as_str())
                .bind(device_id.as_str())
                .execute(&mut *tx)
                .await?;
            }
            // Signatures on the device go with it (a new device could reuse the ID).
            sqlx::query(
                "DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key_id = $2",
            )
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        // Other users' clients must stop encrypting for the devices that went.
        if deleted > 0 {
            super::keys::record_device_list_change(&mut tx, user_id.as_str()).await?;
        }
        tx.commit().await
    }

    /// Deletes every device of a user except `keep`.
    pub async fn delete_other_devices(
        &self,
        user_id: &UserId,
        keep: Option<&DeviceId>,
    ) -> Result<(), sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        let deleted = sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_id <> $2")
            .bind(user_id.as_str())
            .bind(keep.map_or("", DeviceId::as_str))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // The pushers of the devices that went (all of them when no device stays).
        sqlx::query(
            "DELETE FROM pushers WHERE user_id = $1 \
             AND ($2 = '' OR (device_id IS NOT NULL AND device_id <> $2))",
        )
        .bind(user_id.as_str())
        .bind(keep.map_or("", DeviceId::as_str))
        .execute(&mut *tx)
        .await?;
        for table in [
            "sliding_sync_positions",
            "oauth_sessions",
            "oauth_spent_refresh_tokens",
        ] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE user_id = $1 AND device_id <> $2"
            ))
            .bind(user_id.as_str())
            .bind(keep.map_or("", DeviceId::as_str))
            .execute(&mut *tx)
            .await?;
        }
        if deleted > 0 {
            super::keys::record_device_list_change(&mut tx, user_id.as_str()).await?;
        }
        tx.commit().await
    }

    /// Records the address and time of a device's latest request.
    pub async fn touch_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        ip: Option<&str>,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE devices SET last_seen_ip = $1, last_seen_ts = $2 WHERE user_id = $3 AND device_id = $4")
            .bind(ip)
            .bind(now_ms)
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
