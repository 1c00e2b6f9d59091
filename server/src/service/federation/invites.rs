//! Inviting another server's users: the invite is made and checked here, countersigned by the
//! invitee's server (`PUT /_matrix/federation/v2/invite`), then appended and sent on.

use ruma::{CanonicalJsonValue, OwnedEventId, RoomId, ServerName, UserId};
use serde_json::{Value, json};

use crate::{
    http::error::{Error, Result},
    service::{Services, rooms::EventDraft},
};

impl Services {
    /// Invites `target` (of another server) to `room_id` as `sender`, with `content` as the
    /// member event's content.
    pub async fn invite_remote(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        content: Value,
    ) -> Result<OwnedEventId> {
        if !self.config.federation.enabled {
            return Err(Error::forbidden(format!(
                "{target} is on another server, and federation is off here"
            )));
        }
        let draft = EventDraft::state("m.room.member", target.as_str(), content);
        let (version, event_id, json) = self.signed_unstored(room_id, sender, &draft).await?;
        let stripped: Vec<ruma::serde::Raw<Value>> = self.stripped_state(room_id, sender).await?;
        let body = json!({
            "room_version": version,
            "event": serde_json::from_str::<Value>(&json).map_err(|e| Error::Internal(e.into()))?,
            "invite_room_state": stripped,
        });
        let path = format!(
            "/_matrix/federation/v2/invite/{}/{}",
            super::joins::percent(room_id.as_str()),
            super::joins::percent(event_id.as_str()),
        );
        let server = target.server_name();
        let answer = self
            .federation_json(
                server,
                http::Method::PUT,
                &path,
                Some(&body),
                self.federation.timeout,
            )
            .await?;
        let signed = answer.get("event").ok_or_else(|| {
            Error::bad_request(format!("{server} answered the invite without the event"))
        })?;
        let raw = serde_json::value::to_raw_value(signed).map_err(|e| Error::Internal(e.into()))?;
        let checked = self.checked_pdu(&version, &raw).await.map_err(|e| {
            Error::forbidden(format!(
                "{server}'s countersigned invite does not check out: {e}"
            ))
        })?;
        if checked.event_id != event_id {
            return Err(Error::forbidden(format!(
                "{server} changed the invite it was asked to sign"
            )));
        }
        // The invitee's server must have signed it too.
        let countersigned = matches!(
            checked.object.get("signatures"),
            Some(CanonicalJsonValue::Object(all)) if all.contains_key(server.as_str())
        );
        if !countersigned {
            return Err(Error::forbidden(format!(
                "{server} did not sign the invite"
            )));
        }
        let keys = self
            .server_keys_for(
                server,
                &signature_ids(&checked.object, server.as_str()),
                self.now_ms(),
            )
            .await?;
        let mut own = checked.object.clone();
        if let Some(CanonicalJsonValue::Object(all)) = own.get_mut("signatures") {
            all.retain(|name, _| name == server.as_str());
        }
        let (_, rules) = crate::service::rooms::version_rules(&version)?;
        let redacted = ruma::canonical_json::redact(own, &rules.redaction, None)
            .map_err(|e| Error::Internal(e.into()))?;
        ruma::signatures::verify_json(
            &ruma::signatures::PublicKeyMap::from([(server.to_string(), keys)]),
            &redacted,
        )
        .map_err(|e| {
            Error::forbidden(format!(
                "{server}'s signature on the invite does not verify: {e}"
            ))
        })?;
        self.append_remote(room_id, &event_id, &checked.json).await
    }
}

/// The key ids `server` signed `object` with.
fn signature_ids<'a>(object: &'a ruma::CanonicalJsonObject, server: &str) -> Vec<&'a str> {
    match object.get("signatures") {
        Some(CanonicalJsonValue::Object(all)) => match all.get(server) {
            Some(CanonicalJsonValue::Object(by_key)) => by_key.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

impl Services {
    /// # `PUT /_matrix/federation/v2/invite`: `origin` invites one of this server's users.
    /// The invite is checked, signed here too, and kept (with what `origin` showed of the room
    /// when this server is not in it); the countersigned event.
    pub async fn receive_invite(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &ruma::EventId,
        room_version: &str,
        event: &serde_json::value::RawValue,
        stripped: &[Value],
    ) -> Result<Value> {
        self.ensure_acl_allows(origin, room_id).await?;
        let (_, rules) = crate::service::rooms::version_rules(room_version).map_err(|_| {
            Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::IncompatibleRoomVersion(
                    ruma::api::error::IncompatibleRoomVersionErrorData::new(
                        ruma::RoomVersionId::V1,
                    ),
                ),
                format!("Room version {room_version} is not supported here"),
            )
        })?;
        let checked = self
            .checked_pdu(room_version, event)
            .await
            .map_err(|e| Error::forbidden(format!("The invite does not check out: {e}")))?;
        if checked.event_id != event_id {
            return Err(Error::bad_request(format!(
                "The invite's id is {}, not {event_id}",
                checked.event_id
            )));
        }
        let Some(super::pdu::Member {
            sender: Some(sender),
            target: Some(invitee),
            membership,
            room_id: named_room,
        }) = super::pdu::member_of(&checked.object)
        else {
            return Err(Error::bad_request(
                "The invite is not a member event with a sender and an invitee",
            ));
        };
        if membership.as_deref() != Some("invite")
            || sender.server_name() != origin
            || named_room.is_some_and(|r| r != room_id.as_str())
        {
            return Err(Error::bad_request(
                "This is not an invite from the origin's user to this room",
            ));
        }
        if invitee.server_name() != self.config.server_name {
            return Err(Error::bad_request(format!(
                "{invitee} is not a user of this server"
            )));
        }
        match self.store.user(&invitee).await? {
            Some(user) if !user.deactivated => {}
            _ => return Err(Error::not_found(format!("No user {invitee} here"))),
        }
        let mut object = checked.object;
        ruma::signatures::sign_event(
            self.config.server_name.as_str(),
            &self.signing_key,
            &mut object,
            &rules.redaction,
        )
        .map_err(|e| Error::Internal(e.into()))?;
        let json = serde_json::to_string(&object).map_err(|e| Error::Internal(e.into()))?;
        let resident = self.store.room(room_id.as_str()).await?.is_some()
            && self
                .store
                .current_state_event(room_id.as_str(), "m.room.create", "")
                .await?
                .is_some();
        if resident {
            self.append_remote(room_id, event_id, &json).await?;
        } else {
            let shown: Vec<Value> = stripped
                .iter()
                .take(50)
                .filter_map(|e| {
                    let mut kept = serde_json::Map::new();
                    for key in ["type", "state_key", "content", "sender"] {
                        kept.insert(key.to_owned(), e.get(key)?.clone());
                    }
                    Some(Value::Object(kept))
                })
                .collect();
            let shown = serde_json::to_string(&shown).map_err(|e| Error::Internal(e.into()))?;
            self.store
                .set_remote_invite_state(
                    room_id.as_str(),
                    invitee.as_str(),
                    &shown,
                    origin.as_str(),
                )
                .await?;
            self.store_invite_outlier(room_id, room_version, event_id, &sender, &invitee, &json)
                .await?;
        }
        serde_json::from_str(&json).map_err(|e| Error::Internal(e.into()))
    }
}

impl Services {
    /// Rejects an invite to (or withdraws a knock on) a room this server is not in:
    /// `make_leave` and `send_leave` through the server it came from, then the leave kept
    /// like the invite or knock was.
    pub async fn reject_remote_invite(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<OwnedEventId> {
        let Some((_, inviter)) = self
            .store
            .remote_invite_state(room_id.as_str(), user_id.as_str())
            .await?
        else {
            return Err(Error::forbidden(format!(
                "You are not invited to {room_id}, nor knocking on it"
            )));
        };
        let server =
            ruma::OwnedServerName::try_from(inviter).map_err(|e| Error::Internal(e.into()))?;
        let path = format!(
            "/_matrix/federation/v1/make_leave/{}/{}",
            super::joins::percent(room_id.as_str()),
            super::joins::percent(user_id.as_str()),
        );
        let timeout = self.federation.timeout;
        let made = self
            .federation_json(&server, http::Method::GET, &path, None, timeout)
            .await?;
        let version = made["room_version"].as_str().unwrap_or("1").to_owned();
        let (_, rules) = crate::service::rooms::version_rules(&version)?;
        let mut event: ruma::CanonicalJsonObject = serde_json::from_value(made["event"].clone())
            .map_err(|e| Error::bad_request(format!("{server}'s make_leave answer: {e}")))?;
        let is = |key: &str, want: &str| matches!(event.get(key), Some(CanonicalJsonValue::String(s)) if s == want);
        if !is("type", "m.room.member")
            || !is("state_key", user_id.as_str())
            || !is("sender", user_id.as_str())
        {
            return Err(Error::bad_request(format!(
                "{server} offered a leave that is not {user_id}'s"
            )));
        }
        event.insert(
            "content".to_owned(),
            serde_json::from_value(json!({ "membership": "leave" }))
                .map_err(|e| Error::Internal(e.into()))?,
        );
        let event_id = self.sign_template(&mut event, &rules)?;
        let path = format!(
            "/_matrix/federation/v2/send_leave/{}/{}",
            super::joins::percent(room_id.as_str()),
            super::joins::percent(event_id.as_str()),
        );
        let body = serde_json::to_value(&event).map_err(|e| Error::Internal(e.into()))?;
        self.federation_json(&server, http::Method::PUT, &path, Some(&body), timeout)
            .await?;
        let json = serde_json::to_string(&event).map_err(|e| Error::Internal(e.into()))?;
        self.store_invite_outlier(room_id, &version, &event_id, user_id, user_id, &json)
            .await?;
        Ok(event_id)
    }
}
