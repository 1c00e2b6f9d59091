//! Other servers' users joining this server's rooms: `make_join` hands out a template built
//! on the current state, `send_join` takes the signed event back, appends it after the
//! authorization rules, and answers with the room's state and auth chain.

use std::collections::HashSet;

use ruma::{
    CanonicalJsonValue, EventId, OwnedServerName, RoomId, ServerName, UserId, api::error::ErrorKind,
};
use serde_json::value::RawValue as RawJsonValue;

use crate::{
    http::error::{Error, Result},
    service::Services,
};

/// Most events an auth chain answer holds.
const MAX_AUTH_CHAIN: usize = 100_000;

/// The room's state and auth chain as `send_join` answers them, as stored PDUs.
pub struct JoinedState {
    /// The state before the join.
    pub state: Vec<Box<RawJsonValue>>,
    /// Every auth event of those, transitively.
    pub auth_chain: Vec<Box<RawJsonValue>>,
    /// The join as stored.
    pub event: Box<RawJsonValue>,
    /// The servers with joined members.
    pub servers: Vec<String>,
}

fn raw(json: String) -> Result<Box<RawJsonValue>> {
    RawJsonValue::from_string(json).map_err(|e| Error::Internal(e.into()))
}

impl Services {
    /// # `make_join`: the template for `user_id` joining `room_id`, asked by `origin`.
    pub async fn make_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        versions: &[String],
    ) -> Result<(String, CanonicalJsonValue)> {
        if user_id.server_name() != origin {
            return Err(Error::forbidden(format!(
                "{origin} cannot join {user_id}, who is not its user"
            )));
        }
        let room = self
            .store
            .room(room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("No room {room_id} here")))?;
        if !versions.contains(&room.version) {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ErrorKind::IncompatibleRoomVersion(
                    ruma::api::error::IncompatibleRoomVersionErrorData::new(
                        crate::service::rooms::version_rules(&room.version)?.0,
                    ),
                ),
                format!(
                    "The room is version {}, which {origin} does not support",
                    room.version
                ),
            ));
        }
        // A gate is judged on wallets this server knows; another server's users have none.
        if self.room_gate(room_id).await?.is_some() {
            return Err(Error::forbidden(
                "This room is token-gated: only users of its server can be admitted",
            ));
        }
        let (version, template) = self.join_template(room_id, user_id).await?;
        Ok((version, CanonicalJsonValue::Object(template)))
    }

    /// # `send_join`: appends `origin`'s signed join `event_id` to `room_id`.
    pub async fn send_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: &RawJsonValue,
    ) -> Result<JoinedState> {
        let room = self
            .store
            .room(room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("No room {room_id} here")))?;
        let checked = self
            .checked_pdu(&room.version, pdu)
            .await
            .map_err(|e| Error::bad_request(e.to_string()))?;
        if checked.event_id != event_id {
            return Err(Error::bad_request(format!(
                "The event's id is {}, not {event_id}",
                checked.event_id
            )));
        }
        let field = |name: &str| match checked.object.get(name) {
            Some(CanonicalJsonValue::String(s)) => Some(s.as_str()),
            _ => None,
        };
        let membership = match checked.object.get("content") {
            Some(CanonicalJsonValue::Object(content)) => match content.get("membership") {
                Some(CanonicalJsonValue::String(m)) => Some(m.as_str()),
                _ => None,
            },
            _ => None,
        };
        let sender = field("sender").and_then(|s| UserId::parse(s).ok());
        if field("type") != Some("m.room.member")
            || membership != Some("join")
            || field("state_key") != field("sender")
            || sender.as_ref().is_none_or(|s| s.server_name() != origin)
            || field("room_id").is_some_and(|r| r != room_id.as_str())
        {
            return Err(Error::bad_request(
                "send_join takes the join of one of the origin's users to this room",
            ));
        }
        self.append_remote(room_id, event_id, &checked.json).await?;
        // The joining server learns the room from this answer; the room's other servers
        // learn of the join from this one, as its resident server.
        if let Some(sender) = &sender {
            self.queue_for_federation(room_id, event_id.as_str(), sender, None)
                .await?;
        }
        self.joined_state(room_id, event_id).await
    }

    /// The room's current state without `join` (the state it joined), and its auth chain.
    async fn joined_state(&self, room_id: &RoomId, join: &EventId) -> Result<JoinedState> {
        let state_ids: Vec<String> = self
            .store
            .current_state(room_id.as_str())
            .await?
            .into_values()
            .filter(|id| id != join.as_str())
            .collect();
        let state = self.store.events(&state_ids).await?;
        let mut seen: HashSet<String> = HashSet::new();
        let mut chain = Vec::new();
        let mut next: Vec<String> = state.iter().flat_map(|e| auth_events_of(&e.json)).collect();
        while !next.is_empty() && chain.len() < MAX_AUTH_CHAIN {
            next.retain(|id| seen.insert(id.clone()));
            let found = self.store.events(&next).await?;
            next = found.iter().flat_map(|e| auth_events_of(&e.json)).collect();
            chain.extend(found.into_iter().filter(|e| e.room_id == room_id.as_str()));
        }
        let event =
            self.store.event(join.as_str()).await?.ok_or_else(|| {
                Error::Internal(anyhow::anyhow!("the join just appended is gone"))
            })?;
        let mut servers: Vec<String> = self
            .store
            .room_members(room_id.as_str(), "join")
            .await?
            .iter()
            .filter_map(|u| UserId::parse(u.as_str()).ok())
            .map(|u| u.server_name().to_string())
            .collect();
        servers.sort();
        servers.dedup();
        Ok(JoinedState {
            state: state
                .into_iter()
                .map(|e| raw(e.json))
                .collect::<Result<_>>()?,
            auth_chain: chain
                .into_iter()
                .map(|e| raw(e.json))
                .collect::<Result<_>>()?,
            event: raw(event.json)?,
            servers,
        })
    }

    /// The other servers with members joined to `room_id` (who must get its new events).
    pub async fn servers_in_room(&self, room_id: &RoomId) -> Result<Vec<OwnedServerName>> {
        let mut servers: Vec<OwnedServerName> = self
            .store
            .room_members(room_id.as_str(), "join")
            .await?
            .iter()
            .filter_map(|u| UserId::parse(u.as_str()).ok())
            .map(|u| u.server_name().to_owned())
            .filter(|s| *s != self.config.server_name)
            .collect();
        servers.sort();
        servers.dedup();
        Ok(servers)
    }
}

/// The `auth_events` a stored PDU names.
fn auth_events_of(json: &str) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct AuthEvents {
        #[serde(default)]
        auth_events: Vec<String>,
    }
    serde_json::from_str::<AuthEvents>(json)
        .map(|a| a.auth_events)
        .unwrap_or_default()
}
