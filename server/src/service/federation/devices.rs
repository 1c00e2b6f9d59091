//! End-to-end encryption across servers: device-list changes and to-device messages as
//! EDUs. A local user's device list changing tells every server sharing a room with them
//! (`m.device_list_update`, with no `prev_id`, so that the receiver fetches the whole list
//! with `/user/devices`, as Synapse does then); a remote user's change marks their list
//! changed for local room mates, whose clients then query the keys again. To-device
//! messages (room keys, verification) go to the recipients' servers in one
//! `m.direct_to_device` per server and request, and arrive for local devices deduplicated
//! by sender and message id. EDUs are kept in memory until sent (not over a restart).

use std::collections::{BTreeMap, BTreeSet};

use ruma::{OwnedServerName, ServerName, UserId};
use serde_json::{Map, Value, json};

use crate::{http::error::Result, service::Services};

/// Most messages taken from one incoming `m.direct_to_device`.
const MAX_INCOMING_MESSAGES: usize = 10_000;
/// Most bytes of one incoming message's content.
const MAX_CONTENT_BYTES: usize = 65_536;

impl Services {
    /// The other servers with users in a room with `user_id`.
    async fn servers_sharing_rooms(&self, user_id: &UserId) -> Result<BTreeSet<OwnedServerName>> {
        Ok(self
            .room_peers(user_id)
            .await?
            .iter()
            .map(|peer| peer.server_name().to_owned())
            .filter(|server| *server != self.config.server_name)
            .collect())
    }

    /// Tells the servers sharing a room with local `user_id` that their device list changed.
    pub(crate) async fn send_device_list_update(&self, user_id: &UserId) -> Result<()> {
        if !self.config.federation.enabled || user_id.server_name() != self.config.server_name {
            return Ok(());
        }
        let servers = self.servers_sharing_rooms(user_id).await?;
        if servers.is_empty() {
            return Ok(());
        }
        let stream_id = self.store.device_list_stream_id(user_id.as_str()).await?;
        let device = self
            .store
            .devices(user_id)
            .await?
            .last()
            .map(|d| d.device_id.to_string())
            .unwrap_or_default();
        let edu = json!({
            "edu_type": "m.device_list_update",
            "content": {
                "user_id": user_id, "device_id": device, "stream_id": stream_id,
                "prev_id": [], "deleted": false,
            },
        });
        let servers: Vec<&str> = servers.iter().map(|s| s.as_str()).collect();
        self.send_kept_edu(&servers, &edu).await
    }

    /// Sends to-device messages for other servers' users (`(user, device or "*", content
    /// JSON)`): one `m.direct_to_device` per server.
    pub(crate) async fn send_remote_to_device(
        &self,
        (sender, message_id): (&UserId, &str),
        kind: &str,
        messages: &[(String, String, String)],
    ) {
        if !self.config.federation.enabled {
            return;
        }
        let mut by_server: BTreeMap<OwnedServerName, Map<String, Value>> = BTreeMap::new();
        for (user, device, content) in messages {
            let Ok(user_id) = UserId::parse(user.as_str()) else {
                continue;
            };
            if user_id.server_name() == self.config.server_name {
                continue;
            }
            let Ok(content) = serde_json::from_str::<Value>(content) else {
                continue;
            };
            let users = by_server
                .entry(user_id.server_name().to_owned())
                .or_default();
            if let Value::Object(devices) = users
                .entry(user.clone())
                .or_insert_with(|| Value::Object(Map::new()))
            {
                devices.insert(device.clone(), content);
            }
        }
        for (server, messages) in by_server {
            let edu = json!({
                "edu_type": "m.direct_to_device",
                "content": {
                    "sender": sender, "type": kind, "message_id": message_id,
                    "messages": messages,
                },
            });
            if let Err(error) = self.send_kept_edu(&[server.as_str()], &edu).await {
                tracing::warn!(%server, %error, "a to-device message for another server was not queued");
            }
        }
    }

    /// `m.device_list_update` and `m.signing_key_update` from `origin`: its user's device
    /// list changed, for local users who share a room with them.
    pub(super) async fn receive_device_list_update(
        &self,
        origin: &ServerName,
        content: &Value,
    ) -> Result<()> {
        let Some(user_id) = content["user_id"]
            .as_str()
            .and_then(|u| UserId::parse(u).ok())
        else {
            return Ok(());
        };
        if user_id.server_name() != origin {
            return Ok(());
        }
        // Only someone in a room here is followed (waking reads their room mates once).
        if self.joined_rooms(&user_id).await?.is_empty() {
            return Ok(());
        }
        self.store.device_list_changed(user_id.as_str()).await?;
        self.wake_device_watchers(&user_id).await
    }

    /// `m.direct_to_device` from `origin`: messages of one of its users for local devices,
    /// kept once per sender and message id.
    pub(super) async fn receive_to_device(
        &self,
        origin: &ServerName,
        content: &Value,
    ) -> Result<()> {
        let (Some(sender), Some(kind), Some(message_id), Some(messages)) = (
            content["sender"]
                .as_str()
                .and_then(|u| UserId::parse(u).ok()),
            content["type"].as_str(),
            content["message_id"].as_str(),
            content["messages"].as_object(),
        ) else {
            return Ok(());
        };
        if sender.server_name() != origin
            || kind.is_empty()
            || message_id.is_empty()
            || message_id.len() > 255
        {
            return Ok(());
        }
        let mut local = Vec::new();
        for (user, devices) in messages {
            let Ok(user_id) = UserId::parse(user.as_str()) else {
                continue;
            };
            if user_id.server_name() != self.config.server_name {
                continue;
            }
            let Some(devices) = devices.as_object() else {
                continue;
            };
            for (device, message) in devices {
                let json = message.to_string();
                if json.len() <= MAX_CONTENT_BYTES && local.len() < MAX_INCOMING_MESSAGES {
                    local.push((user.clone(), device.clone(), json));
                }
            }
        }
        if local.is_empty() {
            return Ok(());
        }
        // Kept once per sender and message id: a transaction sent again delivers nothing twice.
        let recipients = self
            .store
            .queue_remote_to_device((sender.as_str(), message_id), kind, &local, self.now_ms())
            .await?;
        self.wake_recipients(recipients);
        Ok(())
    }
}
