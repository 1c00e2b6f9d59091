//! Checking a PDU another server sent: its size, its id (the reference hash), the signatures
//! of the servers that must sign it, and its content hash (an event whose content does not
//! match is kept redacted, as the spec says).

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, ServerName,
    signatures::{self, PublicKeyMap, Verified},
};
use serde_json::value::RawValue as RawJsonValue;

use super::FederationError;
use crate::service::{Services, rooms::version_rules};

/// Largest PDU the spec allows.
const MAX_PDU_BYTES: usize = 65_535;

/// A PDU that passed the checks: its id and its JSON as it will be stored.
pub struct CheckedPdu {
    /// `$…`, computed here (never taken from the sender).
    pub event_id: OwnedEventId,
    /// The event (redacted when its content hash did not match).
    pub json: String,
    /// The object the JSON holds.
    pub object: CanonicalJsonObject,
}

fn bad(why: impl Into<String>) -> FederationError {
    FederationError::Unauthorized(why.into())
}

/// The id a PDU of a room of `room_version` has (its reference hash; the `event_id` it
/// carries in room versions 1 and 2), before any other check.
pub fn event_id_of(room_version: &str, raw: &RawJsonValue) -> Result<OwnedEventId, String> {
    let (_, rules) = version_rules(room_version).map_err(|e| e.to_string())?;
    let mut object: CanonicalJsonObject =
        serde_json::from_str(raw.get()).map_err(|e| format!("not canonical JSON: {e}"))?;
    object.remove("unsigned");
    id_of(&mut object, &rules)
}

/// The id of `object`, as its room version names events; `event_id` is left in place only
/// where it is part of the event (versions 1 and 2).
fn id_of(
    object: &mut CanonicalJsonObject,
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Result<OwnedEventId, String> {
    if rules.event_id_format == ruma::room_version_rules::EventIdFormatVersion::V1 {
        return match object.get("event_id") {
            Some(CanonicalJsonValue::String(id)) => {
                EventId::parse(id.as_str()).map_err(|e| format!("its event_id: {e}"))
            }
            _ => Err("the event has no event_id (room versions 1 and 2 name it)".to_owned()),
        };
    }
    object.remove("event_id");
    let reference = signatures::reference_hash(object, rules).map_err(|e| e.to_string())?;
    EventId::parse(format!("${reference}")).map_err(|e| e.to_string())
}

/// The fields of a member event that say whose membership it is and what.
pub struct Member {
    /// `sender`.
    pub sender: Option<ruma::OwnedUserId>,
    /// `state_key`, as a user id.
    pub target: Option<ruma::OwnedUserId>,
    /// `content.membership`.
    pub membership: Option<String>,
    /// `room_id` (absent from a version 12 create event only).
    pub room_id: Option<String>,
}

/// The member fields of `object`, or `None` when it is not an `m.room.member` event.
pub fn member_of(object: &CanonicalJsonObject) -> Option<Member> {
    let text = |value: Option<&CanonicalJsonValue>| match value {
        Some(CanonicalJsonValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    if text(object.get("type")).as_deref() != Some("m.room.member") {
        return None;
    }
    let membership = match object.get("content") {
        Some(CanonicalJsonValue::Object(content)) => text(content.get("membership")),
        _ => None,
    };
    Some(Member {
        sender: text(object.get("sender")).and_then(|s| ruma::UserId::parse(s).ok()),
        target: text(object.get("state_key")).and_then(|s| ruma::UserId::parse(s).ok()),
        membership,
        room_id: text(object.get("room_id")),
    })
}

impl Services {
    /// Checks `raw` as a PDU of a room of `room_version`.
    pub async fn checked_pdu(
        &self,
        room_version: &str,
        raw: &RawJsonValue,
    ) -> Result<CheckedPdu, FederationError> {
        if raw.get().len() > MAX_PDU_BYTES {
            return Err(bad(format!(
                "The event is larger than {MAX_PDU_BYTES} bytes"
            )));
        }
        let (_, rules) =
            version_rules(room_version).map_err(|e| FederationError::Internal(e.to_string()))?;
        let mut object: CanonicalJsonObject = serde_json::from_str(raw.get())
            .map_err(|e| bad(format!("The event is not canonical JSON: {e}")))?;
        // Fields the sender may not set for us.
        object.remove("unsigned");
        let event_id = id_of(&mut object, &rules)
            .map_err(|e| bad(format!("The event cannot be identified: {e}")))?;
        let servers =
            signatures::required_server_signatures_to_verify_event(&object, &rules.signatures)
                .map_err(|e| bad(format!("The event names no server to check: {e}")))?;
        let at = match object.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
            _ => return Err(bad("The event has no origin_server_ts")),
        };
        let mut keys = PublicKeyMap::new();
        for server in servers {
            let key_ids: Vec<String> = match object.get("signatures") {
                Some(CanonicalJsonValue::Object(all)) => match all.get(server.as_str()) {
                    Some(CanonicalJsonValue::Object(by_key)) => by_key.keys().cloned().collect(),
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            if key_ids.is_empty() {
                return Err(bad(format!("The event is not signed by {server}")));
            }
            let ids: Vec<&str> = key_ids.iter().map(String::as_str).collect();
            let server: &ServerName = &server;
            let found = self.server_keys_for(server, &ids, at).await?;
            keys.insert(server.to_string(), found);
        }
        let verified = signatures::verify_event(&keys, &object, &rules)
            .map_err(|e| bad(format!("The event's signatures do not verify: {e}")))?;
        if verified == Verified::Signatures {
            tracing::info!(%event_id, "an event's content hash does not match: kept redacted");
            object = ruma::canonical_json::redact(object, &rules.redaction, None)
                .map_err(|e| bad(format!("The event cannot be redacted: {e}")))?;
        }
        let json =
            serde_json::to_string(&object).map_err(|e| FederationError::Internal(e.to_string()))?;
        Ok(CheckedPdu {
            event_id,
            json,
            object,
        })
    }
}
