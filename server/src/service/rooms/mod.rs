//! Rooms: making events, creating rooms, memberships, and reading events back for clients.

mod append;
mod create;
mod forks;
pub mod hierarchy;
mod membership;
pub mod pdu;
pub mod peek;
mod relations;
pub mod summary;
mod upgrade;
mod visibility;

use std::collections::HashMap;

use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::Value;

pub use append::{EventDraft, RoomLocks, STATE_CHANGED, version_rules};
pub use create::CreateRoom;
pub use membership::MembershipChange;
pub(crate) use membership::level;
pub use pdu::Pdu;
pub use relations::RelationsPage;

use super::Services;
use crate::{
    http::error::{Error, Result},
    store::StoredEvent,
};

/// Room versions this server can create and join: every stable one.
pub const SUPPORTED_ROOM_VERSIONS: [&str; 12] = [
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
];

impl Services {
    /// Wakes the syncs of the room's joined members for something other than new events
    /// (a receipt, say).
    pub(crate) async fn wake_room(&self, room_id: &RoomId) -> Result<()> {
        let users = self.wake_list(room_id, None).await?;
        self.bus.wake(users.iter().map(|u| &**u));
        Ok(())
    }

    /// Wakes the syncs of the room's joined members, and of `also` (the target of a
    /// membership change, who may not be joined), for a new event of the room.
    pub(crate) async fn wake_room_for_event(
        &self,
        room_id: &RoomId,
        also: Option<&str>,
        position: i64,
    ) -> Result<()> {
        let users = self.wake_list(room_id, also).await?;
        self.bus
            .wake_for_events(users.iter().map(|u| &**u), position);
        Ok(())
    }

    async fn wake_list(&self, room_id: &RoomId, also: Option<&str>) -> Result<Vec<OwnedUserId>> {
        let mut members = self.store.room_members(room_id.as_str(), "join").await?;
        if let Some(also) = also {
            members.push(also.to_owned());
        }
        members.extend(self.peekers.of(room_id).iter().map(ToString::to_string));
        Ok(members
            .iter()
            .filter_map(|u| UserId::parse(u.as_str()).ok())
            .collect())
    }

    /// The user's current membership in the room (`join`, `invite`, `leave`, `ban`, `knock`).
    pub async fn membership(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<String>> {
        Ok(self
            .store
            .membership(room_id.as_str(), user_id.as_str())
            .await?
            .map(|(membership, _, _)| membership))
    }

    /// 403 unless the user is joined to the room.
    pub async fn ensure_joined(&self, room_id: &RoomId, user_id: &UserId) -> Result<()> {
        match self.membership(room_id, user_id).await?.as_deref() {
            Some("join") => Ok(()),
            _ => Err(Error::forbidden(format!(
                "You are not a member of {room_id}"
            ))),
        }
    }

    /// Content of one piece of the room's current state.
    pub async fn state_content(
        &self,
        room_id: &RoomId,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<Value>> {
        let Some(stored) = self
            .store
            .current_state_event(room_id.as_str(), kind, state_key)
            .await?
        else {
            return Ok(None);
        };
        let pdu = Pdu::from_stored(&stored).map_err(Error::Internal)?;
        Ok(Some(Value::Object(pdu.content_object())))
    }

    /// Stored events in the client format for `viewer` (user and device), with
    /// `redacted_because` for redacted ones and bundled aggregations.
    pub async fn client_events(
        &self,
        events: &[StoredEvent],
        viewer: Option<(&UserId, &str)>,
        sync: bool,
    ) -> Result<Vec<Value>> {
        let viewer_device = viewer.map(|(_, device)| device);
        let now = self.now_ms();
        let redactions: Vec<String> = events
            .iter()
            .filter_map(|e| e.redacted_by.clone())
            .collect();
        let because: HashMap<String, Value> = if redactions.is_empty() {
            HashMap::new()
        } else {
            self.store
                .events(&redactions)
                .await?
                .iter()
                .filter_map(|stored| {
                    let pdu = Pdu::from_stored(stored).ok()?;
                    Some((stored.event_id.clone(), pdu.to_client(now, None, false)))
                })
                .collect()
        };
        let mut rendered = events
            .iter()
            .map(|stored| {
                let pdu = Pdu::from_stored(stored).map_err(Error::Internal)?;
                let mut event = pdu.to_client(now, viewer_device, sync);
                if let (Some(by), Some(unsigned)) = (
                    &stored.redacted_by,
                    event.get_mut("unsigned").and_then(Value::as_object_mut),
                ) && let Some(redaction) = because.get(by)
                {
                    unsigned.insert("redacted_because".to_owned(), redaction.clone());
                }
                Ok(event)
            })
            .collect::<Result<Vec<_>>>()?;
        self.bundle_aggregations(&mut rendered, events, viewer.map(|(user, _)| user))
            .await?;
        Ok(rendered)
    }

    /// The member event content a user joins with: membership plus their profile.
    pub(crate) async fn member_content(&self, user_id: &UserId, membership: &str) -> Result<Value> {
        let (displayname, avatar_url) = self.store.profile(user_id.as_str()).await?;
        let mut content = serde_json::json!({ "membership": membership });
        if membership == "join" || membership == "invite" {
            let name = displayname.unwrap_or_else(|| user_id.localpart().to_owned());
            content["displayname"] = Value::from(name);
            if let Some(avatar) = avatar_url {
                content["avatar_url"] = Value::from(avatar);
            }
        }
        Ok(content)
    }
}
