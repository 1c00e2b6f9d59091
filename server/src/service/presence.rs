//! Presence: online, unavailable or offline, with a status message; kept in memory.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde_json::{Value, json};

use super::Services;
use crate::http::error::{Error, Result};

/// Longest status message taken from another server.
const MAX_STATUS_MSG_BYTES: usize = 1024;

/// One user's presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserPresence {
    /// `online`, `unavailable` or `offline`.
    pub state: String,
    /// Free text.
    pub status_msg: Option<String>,
    /// Last time the user did something, ms since the epoch.
    pub last_active_ms: i64,
    /// Serial of the last change.
    pub serial: i64,
}

/// A user's presence as `/sync` sends it (`m.presence` with `sender`).
pub fn presence_event(user_id: &UserId, state: &UserPresence, now_ms: i64) -> Value {
    let mut content = json!({
        "presence": state.state,
        "last_active_ago": now_ms.saturating_sub(state.last_active_ms).max(0),
        "currently_active": state.state == "online",
    });
    if let Some(msg) = &state.status_msg {
        content["status_msg"] = Value::from(msg.as_str());
    }
    json!({ "type": "m.presence", "sender": user_id, "content": content })
}

/// Everyone's presence, with a serial per change for sync tokens.
#[derive(Default)]
pub struct Presence {
    state: Mutex<(i64, HashMap<OwnedUserId, UserPresence>)>,
}

impl Presence {
    /// The latest serial.
    pub fn serial(&self) -> i64 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    /// A user's presence, if ever set.
    pub fn get(&self, user_id: &UserId) -> Option<UserPresence> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .get(user_id)
            .cloned()
    }

    /// Sets presence; true when it changed (state or message), which others should hear of.
    pub fn apply(
        &self,
        user_id: &UserId,
        state: &str,
        status_msg: Option<Option<&str>>,
        now_ms: i64,
    ) -> bool {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (serial, users) = &mut *guard;
        let previous = users.get(user_id).cloned();
        let status_msg = match status_msg {
            Some(msg) => msg.map(str::to_owned),
            None => previous.as_ref().and_then(|p| p.status_msg.clone()),
        };
        let changed = previous
            .as_ref()
            .is_none_or(|p| p.state != state || p.status_msg != status_msg);
        let next_serial = if changed {
            *serial + 1
        } else {
            previous.as_ref().map_or(0, |p| p.serial)
        };
        if changed {
            *serial += 1;
        }
        users.insert(
            user_id.to_owned(),
            UserPresence {
                state: state.to_owned(),
                status_msg,
                last_active_ms: now_ms,
                serial: next_serial,
            },
        );
        changed
    }
}

impl Services {
    /// Sets the user's presence (`status_msg: None` keeps the current message) and tells
    /// the people who share a room with them.
    pub async fn set_presence(
        &self,
        user_id: &UserId,
        state: &str,
        status_msg: Option<Option<&str>>,
    ) -> Result<()> {
        if !matches!(state, "online" | "unavailable" | "offline") {
            return Err(Error::invalid_param(format!("Unknown presence {state}")));
        }
        let now = self.now_ms();
        if self.presence.apply(user_id, state, status_msg, now) {
            let rooms = self.joined_rooms(user_id).await?;
            let mut peers = self.peers_in(user_id, &rooms).await?;
            // Whoever peeks into one of the user's rooms hears of it too.
            for room in &rooms {
                for peeker in self.peekers.of(room) {
                    if !peers.contains(&peeker) {
                        peers.push(peeker);
                    }
                }
            }
            let message = self.presence.get(user_id).and_then(|p| p.status_msg);
            self.bus
                .presence_changed(user_id, (state, message.as_deref()), now, &peers);
            self.send_presence_edu(user_id, (state, message.as_deref()), &peers);
        }
        Ok(())
    }

    /// Tells the other servers of `peers` that local `user_id`'s presence changed.
    fn send_presence_edu(
        &self,
        user_id: &UserId,
        (state, status_msg): (&str, Option<&str>),
        peers: &[OwnedUserId],
    ) {
        if !self.config.federation.enabled || user_id.server_name() != self.config.server_name {
            return;
        }
        let mut servers: Vec<&ruma::ServerName> = peers
            .iter()
            .map(|p| p.server_name())
            .filter(|s| *s != self.config.server_name)
            .collect();
        servers.sort();
        servers.dedup();
        let mut entry = json!({
            "user_id": user_id, "presence": state, "last_active_ago": 0,
            "currently_active": state == "online",
        });
        if let Some(message) = status_msg {
            entry["status_msg"] = Value::from(message);
        }
        let edu = json!({ "edu_type": "m.presence", "content": { "push": [entry] } });
        self.federation
            .send_edu(servers.iter().map(|s| s.as_str()), &edu);
    }

    /// `m.presence` from `origin`: its users' presence, kept for those who share a room
    /// with a local user.
    pub(crate) async fn receive_presence_edu(
        &self,
        origin: &ruma::ServerName,
        content: &Value,
    ) -> Result<()> {
        let Some(push) = content["push"].as_array() else {
            return Ok(());
        };
        for entry in push.iter().take(100) {
            let Some(user_id) = entry["user_id"]
                .as_str()
                .and_then(|u| UserId::parse(u).ok())
            else {
                continue;
            };
            let Some(state) = entry["presence"]
                .as_str()
                .filter(|s| matches!(*s, "online" | "unavailable" | "offline"))
            else {
                continue;
            };
            // Only someone in a room here is kept (setting it reads their room mates once).
            if user_id.server_name() != origin || self.joined_rooms(&user_id).await?.is_empty() {
                continue;
            }
            let message = entry["status_msg"]
                .as_str()
                .filter(|m| m.len() <= MAX_STATUS_MSG_BYTES);
            self.set_presence(&user_id, state, Some(message)).await?;
        }
        Ok(())
    }

    /// Everyone who shares a joined room with the user (the user included).
    pub async fn room_peers(&self, user_id: &UserId) -> Result<Vec<OwnedUserId>> {
        let rooms = self.joined_rooms(user_id).await?;
        self.peers_in(user_id, &rooms).await
    }

    /// [`Services::room_peers`] for rooms already read.
    async fn peers_in(&self, user_id: &UserId, rooms: &[OwnedRoomId]) -> Result<Vec<OwnedUserId>> {
        let mut peers = vec![user_id.to_owned()];
        for room in rooms {
            for member in self.store.room_members(room.as_str(), "join").await? {
                if let Ok(member) = UserId::parse(member)
                    && !peers.contains(&member)
                {
                    peers.push(member);
                }
            }
        }
        Ok(peers)
    }
}
