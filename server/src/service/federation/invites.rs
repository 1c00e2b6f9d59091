//! Inviting another server's users: the invite is made and checked here, countersigned by the
//! invitee's server (`PUT /_matrix/federation/v2/invite`), then appended and sent on.

use ruma::{CanonicalJsonValue, OwnedEventId, RoomId, UserId};
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
