//! Leaves and knocks across servers. As a room's server: `make_leave`/`send_leave` (a user
//! of another server rejecting an invite or withdrawing a knock, their server not being in
//! the room) and `make_knock`/`send_knock` (asking to be let in). As the knocking user's
//! server: the same two knock requests the other way, the knock kept like a remote invite
//! (with the state the room's server showed), so that sync lists it and a later leave
//! withdraws it through that server.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedServerName, RoomId,
    ServerName, UserId,
};
use serde_json::{Value, json, value::RawValue as RawJsonValue};

use super::pdu::CheckedPdu;
use crate::{
    http::error::{Error, Result},
    service::Services,
};

impl Services {
    /// # `make_join` / `make_leave` / `make_knock`: the template for `user_id` (of `origin`)
    /// joining, leaving or knocking on `room_id`; the room version and the unsigned event.
    pub async fn make_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        membership: &str,
        versions: Option<&[String]>,
    ) -> Result<(String, CanonicalJsonValue)> {
        if user_id.server_name() != origin {
            return Err(Error::forbidden(format!(
                "{origin} cannot act for {user_id}, who is not its user"
            )));
        }
        self.ensure_acl_allows(origin, room_id).await?;
        let room = self
            .store
            .room(room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("No room {room_id} here")))?;
        if let Some(versions) = versions
            && !versions.contains(&room.version)
        {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::IncompatibleRoomVersion(
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
        // A server with none of its users left in the room cannot be joined through.
        if membership == "join"
            && !self
                .store
                .has_member_of_server(room_id.as_str(), "join", self.config.server_name.as_str())
                .await?
        {
            return Err(Error::not_found(format!(
                "None of this server's users is left in {room_id}"
            )));
        }
        // A gate is judged on wallets this server knows; another server's users have none.
        if matches!(membership, "join" | "knock") && self.room_gate(room_id).await?.is_some() {
            return Err(Error::forbidden(
                "This room is token-gated: only users of its server can be admitted",
            ));
        }
        let mut content = serde_json::json!({ "membership": membership });
        // A restricted room: one of this server's users with the power to invite vouches
        // for a user of an allowed room, and this server countersigns the join (send_join).
        if membership == "join"
            && let Some(via) = self.restricted_join_authoriser(room_id, user_id).await?
        {
            content["join_authorised_via_users_server"] = serde_json::Value::from(via);
        }
        let (version, template) = self.membership_template(room_id, user_id, content).await?;
        Ok((version, CanonicalJsonValue::Object(template)))
    }

    /// Checks that `pdu` is `event_id`, one of `origin`'s users' own `membership` event in
    /// `room_id` (joins, leaves and knocks come back signed this way).
    pub(super) async fn own_member_event(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: &RawJsonValue,
        membership: &str,
    ) -> Result<(CheckedPdu, ruma::OwnedUserId)> {
        self.ensure_acl_allows(origin, room_id).await?;
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
        let member = super::pdu::member_of(&checked.object);
        let sender = member.as_ref().and_then(|m| m.sender.clone());
        let is_own = member.as_ref().is_some_and(|m| {
            m.membership.as_deref() == Some(membership)
                && m.target.is_some()
                && m.target == m.sender
                && m.room_id.as_deref().is_none_or(|r| r == room_id.as_str())
        });
        match sender {
            Some(sender) if is_own && sender.server_name() == origin => Ok((checked, sender)),
            _ => Err(Error::bad_request(format!(
                "This takes the {membership} of one of the origin's users to this room"
            ))),
        }
    }

    /// # `send_leave` / `send_knock`: appends `origin`'s signed `membership` event after the
    /// authorization rules and sends it to the room's other servers.
    pub async fn send_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: &RawJsonValue,
        membership: &str,
    ) -> Result<()> {
        let (checked, sender) = self
            .own_member_event(origin, room_id, event_id, pdu, membership)
            .await?;
        if membership == "knock" && self.room_gate(room_id).await?.is_some() {
            return Err(Error::forbidden(
                "This room is token-gated: only users of its server can be admitted",
            ));
        }
        self.append_remote(room_id, event_id, &checked.json).await?;
        self.queue_for_federation(room_id, event_id.as_str(), &sender, None)
            .await?;
        Ok(())
    }

    /// What a knocking user of another server is shown of the room (`knock_room_state`):
    /// the state an invitee sees, as full PDUs (Matrix 1.16).
    pub async fn knock_room_state(&self, room_id: &RoomId) -> Result<Vec<Box<RawJsonValue>>> {
        let mut events = Vec::new();
        for kind in [
            "m.room.create",
            "m.room.join_rules",
            "m.room.name",
            "m.room.avatar",
            "m.room.topic",
            "m.room.canonical_alias",
            "m.room.encryption",
        ] {
            if let Some(stored) = self
                .store
                .current_state_event(room_id.as_str(), kind, "")
                .await?
            {
                events.push(super::raw_pdu(stored)?);
            }
        }
        Ok(events)
    }

    /// Knocks on a room this server is not in, through `via` (the room id's server when
    /// empty): `make_knock`, signed here, `send_knock`; the knock is kept with the state the
    /// room's server showed.
    pub async fn knock_remote(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        reason: Option<&str>,
        via: &[OwnedServerName],
    ) -> Result<OwnedEventId> {
        let mut servers: Vec<OwnedServerName> = via
            .iter()
            .filter(|s| **s != self.config.server_name)
            .cloned()
            .collect();
        if let Some(own) = room_id.server_name()
            && own != self.config.server_name
            && !servers.iter().any(|s| s == own)
        {
            servers.push(own.to_owned());
        }
        if servers.is_empty() {
            return Err(Error::not_found(format!(
                "No room {room_id} here, and no server to knock through"
            )));
        }
        let mut last = Error::not_found(format!("No server could let {user_id} knock"));
        for server in servers.iter().take(5) {
            match self.knock_through(server, room_id, user_id, reason).await {
                Ok(event_id) => return Ok(event_id),
                Err(e) => {
                    tracing::info!(%room_id, %server, error = %e, "knocking through a server failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn knock_through(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        user_id: &UserId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId> {
        let path = super::joins::make_path("make_knock", room_id, user_id);
        let timeout = self.federation.timeout;
        let made = self
            .federation_json(server, http::Method::GET, &path, None, timeout)
            .await?;
        let version = made["room_version"]
            .as_str()
            .ok_or_else(|| {
                Error::bad_request(format!("{server}'s make_knock names no room version"))
            })?
            .to_owned();
        let (_, rules) = crate::service::rooms::version_rules(&version)?;
        let mut event: CanonicalJsonObject = serde_json::from_value(made["event"].clone())
            .map_err(|e| Error::bad_request(format!("{server}'s make_knock answer: {e}")))?;
        let is = |key: &str, want: &str| matches!(event.get(key), Some(CanonicalJsonValue::String(s)) if s == want);
        if !is("type", "m.room.member")
            || !is("state_key", user_id.as_str())
            || !is("sender", user_id.as_str())
            || !is("room_id", room_id.as_str())
        {
            return Err(Error::bad_request(format!(
                "{server} offered a knock that is not {user_id}'s on {room_id}"
            )));
        }
        let mut content = self.member_content(user_id, "knock").await?;
        if let Some(reason) = reason {
            content["reason"] = Value::from(reason);
        }
        event.insert(
            "content".to_owned(),
            serde_json::from_value(content).map_err(|e| Error::Internal(e.into()))?,
        );
        let event_id = self.sign_template(&mut event, &rules)?;
        let path = format!(
            "/_matrix/federation/v1/send_knock/{}/{}",
            super::joins::percent(room_id.as_str()),
            super::joins::percent(event_id.as_str()),
        );
        let body = serde_json::to_value(&event).map_err(|e| Error::Internal(e.into()))?;
        let answer = self
            .federation_json(server, http::Method::PUT, &path, Some(&body), timeout)
            .await?;
        // What the room's server shows a knocker, kept for sync (without anything that is not
        // a small stripped state event).
        let shown: Vec<Value> = answer["knock_room_state"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e["type"].is_string() && e["state_key"].is_string())
                    .take(50)
                    .map(|e| {
                        json!({
                            "type": e["type"], "state_key": e["state_key"],
                            "sender": e["sender"], "content": e["content"],
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let shown = serde_json::to_string(&shown).map_err(|e| Error::Internal(e.into()))?;
        self.store
            .set_remote_invite_state(room_id.as_str(), user_id.as_str(), &shown, server.as_str())
            .await?;
        let json = serde_json::to_string(&event).map_err(|e| Error::Internal(e.into()))?;
        self.store_invite_outlier(room_id, &version, &event_id, user_id, user_id, &json)
            .await?;
        Ok(event_id)
    }
}
