//! A user's data, exported for a data-protection request: one JSON object per line (JSON
//! Lines) — a header, then their profile, account data, devices, linked wallets, room
//! memberships, every event they sent, every file they uploaded (its bytes in base64), and an
//! `end` line (an export without it was cut short).

use base64::Engine;
use futures_util::StreamExt;
use ruma::UserId;
use serde_json::{Value, json};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::Services;
use crate::http::error::{Error, Result};

impl Services {
    /// Writes the export of a local user to `out`; how many lines it wrote.
    pub async fn export_user(
        &self,
        user_id: &UserId,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<u64> {
        if user_id.server_name() != self.config.server_name
            || self.store.user(user_id).await?.is_none()
        {
            return Err(Error::not_found(format!(
                "No user {user_id} on this server"
            )));
        }
        let user = user_id.as_str();
        let mut sink = Lines { out, written: 0 };
        sink.put(json!({
            "type": "io.matrixon.export", "version": 1, "user_id": user,
            "exported_at": self.now_ms(),
        }))
        .await?;
        let (displayname, avatar_url) = self.store.profile(user).await?;
        sink.put(json!({"type": "profile", "displayname": displayname, "avatar_url": avatar_url}))
            .await?;
        for (room_id, kind, content) in self.store.account_data_since(user, 0, i64::MAX).await? {
            let room_id = (!room_id.is_empty()).then_some(room_id);
            sink.put(json!({"type": "account_data", "room_id": room_id,
                "event_type": kind, "content": content}))
                .await?;
        }
        for device in self.store.devices(user_id).await? {
            sink.put(json!({"type": "device", "device_id": device.device_id,
                "display_name": device.display_name, "last_seen_ip": device.last_seen_ip,
                "last_seen_ts": device.last_seen_ms}))
                .await?;
        }
        for (address, linked_ts) in self.store.wallets(user_id).await? {
            sink.put(json!({"type": "wallet", "address": address, "linked_ts": linked_ts}))
                .await?;
        }
        for (room_id, membership, since) in self.store.user_rooms(user).await? {
            sink.put(json!({"type": "membership", "room_id": room_id,
                "membership": membership, "since": since}))
                .await?;
        }
        let mut events = self.store.events_sent_by(user);
        while let Some(event) = events.next().await {
            let event: Value = serde_json::from_str(&event?).map_err(anyhow::Error::new)?;
            sink.put(json!({"type": "event", "event": event})).await?;
        }
        drop(events);
        for upload in self.store.uploads_by(user).await? {
            // A file lost from the media directory is listed without its bytes.
            let data = tokio::fs::read(self.blob_file(&upload.sha256))
                .await
                .ok()
                .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes));
            sink.put(json!({"type": "media",
                "mxc": format!("mxc://{}/{}", self.config.server_name, upload.media_id),
                "content_type": upload.content_type, "filename": upload.filename,
                "size": upload.size, "created_ts": upload.created_ts, "sha256": upload.sha256,
                "data_base64": data}))
                .await?;
        }
        let lines = sink.written + 1;
        sink.put(json!({"type": "end", "lines": lines})).await?;
        let Lines { out, written } = sink;
        out.flush().await.map_err(anyhow::Error::new)?;
        Ok(written)
    }
}

/// Longest wait for the reader to take one line.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The export's output, a line at a time.
struct Lines<'a> {
    out: &'a mut (dyn AsyncWrite + Send + Unpin),
    written: u64,
}

impl Lines<'_> {
    async fn put(&mut self, value: Value) -> Result<()> {
        let mut text = value.to_string();
        text.push('\n');
        // A reader that stops reading does not hold the export (and its database connection).
        tokio::time::timeout(WRITE_TIMEOUT, self.out.write_all(text.as_bytes()))
            .await
            .map_err(|_| anyhow::anyhow!("the export's reader stopped reading"))?
            .map_err(anyhow::Error::new)?;
        self.written += 1;
        Ok(())
    }
}
