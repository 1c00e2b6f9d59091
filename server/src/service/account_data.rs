//! Account data (global and per room) and stored sync filters.

use ruma::{RoomId, UserId, api::client::filter::FilterDefinition};
use serde_json::Value;

use super::Services;
use crate::http::error::{Error, Result};

impl Services {
    /// Sets an account-data entry and wakes the user's syncs.
    pub async fn set_account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
        content: Value,
    ) -> Result<()> {
        if let Some(room_id) = room_id
            && self.store.room(room_id.as_str()).await?.is_none()
        {
            return Err(Error::not_found(format!("No room {room_id}")));
        }
        if matches!(kind, "m.fully_read" | "m.push_rules") {
            return Err(Error::bad_json(format!(
                "{kind} is managed by the server through its own endpoint"
            )));
        }
        let content = serde_json::to_string(&content).map_err(|e| Error::Internal(e.into()))?;
        self.store
            .set_account_data(
                user_id.as_str(),
                room_id.map_or("", |r| r.as_str()),
                kind,
                &content,
            )
            .await?;
        self.bus.wake([user_id]);
        Ok(())
    }

    /// A global account-data entry as sync reads it: `null` when never set (or unreadable).
    pub(super) async fn global_account_data(&self, user_id: &UserId, kind: &str) -> Result<Value> {
        let content = self.store.account_data(user_id.as_str(), "", kind).await?;
        Ok(content
            .and_then(|c| serde_json::from_str(&c).ok())
            .unwrap_or_default())
    }

    /// An account-data entry: 404 `M_NOT_FOUND` when never set.
    pub async fn account_data(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        kind: &str,
    ) -> Result<Value> {
        let content = self
            .store
            .account_data(user_id.as_str(), room_id.map_or("", |r| r.as_str()), kind)
            .await?
            .ok_or_else(|| Error::not_found(format!("No account data of type {kind}")))?;
        serde_json::from_str(&content).map_err(|e| Error::Internal(e.into()))
    }

    /// A filter the user stored: 404 `M_NOT_FOUND` for unknown ids.
    pub async fn stored_filter(
        &self,
        user_id: &UserId,
        filter_id: &str,
    ) -> Result<FilterDefinition> {
        let not_found = || Error::not_found(format!("No filter {filter_id}"));
        let id: i64 = filter_id.parse().map_err(|_| not_found())?;
        let json = self
            .store
            .filter(user_id.as_str(), id)
            .await?
            .ok_or_else(not_found)?;
        serde_json::from_str(&json).map_err(|e| Error::Internal(e.into()))
    }
}

impl Services {
    /// The room's tags for the user (`m.tag` room account data): `{tag: {order}}`.
    pub async fn room_tags(&self, user_id: &UserId, room_id: &RoomId) -> Result<Value> {
        Ok(
            match self.account_data(user_id, Some(room_id), "m.tag").await {
                Ok(content) => content
                    .get("tags")
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({})),
                Err(Error::Matrix {
                    kind: ruma::api::error::ErrorKind::NotFound,
                    ..
                }) => serde_json::json!({}),
                Err(other) => return Err(other),
            },
        )
    }

    /// Adds or replaces (`Some(info)`) or removes (`None`) one tag of a room.
    pub async fn set_room_tag(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
        tag: &str,
        info: Option<Value>,
    ) -> Result<()> {
        if tag.is_empty() || tag.len() > 255 {
            return Err(Error::invalid_param("A tag has 1 to 255 bytes"));
        }
        let mut tags = self.room_tags(user_id, room_id).await?;
        let Some(map) = tags.as_object_mut() else {
            return Err(Error::Internal(anyhow::anyhow!(
                "stored tags are not an object"
            )));
        };
        match info {
            Some(info) => {
                if info.get("order").is_some_and(|o| !o.is_number()) {
                    return Err(Error::bad_json("order must be a number"));
                }
                map.insert(tag.to_owned(), info);
            }
            None => {
                map.remove(tag);
            }
        }
        self.set_account_data(
            user_id,
            Some(room_id),
            "m.tag",
            serde_json::json!({ "tags": tags }),
        )
        .await
    }
}
