//! A room event as the server holds it: the signed PDU plus where it sits, readable by the
//! authorization rules (`state_res::Event`) and renderable in the client format.

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt,
    UserId, events::TimelineEventType, state_res,
};
use serde::Deserialize;
use serde_json::{Map, Value, value::RawValue as RawJsonValue};

use crate::store::StoredEvent;

/// One reference to another event: its id, or (room versions 1 and 2) `[id, hashes]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum EventRef {
    Id(OwnedEventId),
    WithHashes(OwnedEventId, serde::de::IgnoredAny),
}

/// `prev_events` / `auth_events` in either form, as ids.
fn event_refs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<OwnedEventId>, D::Error> {
    Ok(Vec::<EventRef>::deserialize(d)?
        .into_iter()
        .map(|r| match r {
            EventRef::Id(id) | EventRef::WithHashes(id, _) => id,
        })
        .collect())
}

/// The ids an event names in `field` (`prev_events`, `auth_events`), in either form.
pub fn referenced_ids(json: &str, field: &str) -> Vec<String> {
    serde_json::from_str::<Value>(json)
        .ok()
        .and_then(|v| v.get(field).cloned())
        .and_then(|refs| event_refs(refs).ok())
        .map(|ids| ids.into_iter().map(|id| id.to_string()).collect())
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct Fields {
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawJsonValue>,
    state_key: Option<String>,
    #[serde(default, deserialize_with = "event_refs")]
    prev_events: Vec<OwnedEventId>,
    #[serde(default, deserialize_with = "event_refs")]
    auth_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
    depth: UInt,
}

/// One event of a room.
#[derive(Debug)]
pub struct Pdu {
    /// `$…` (the reference hash).
    pub event_id: OwnedEventId,
    /// The room (derived from the create event in room version 12).
    pub room_id: OwnedRoomId,
    /// The sender.
    pub sender: OwnedUserId,
    /// When the sender's server made it.
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    /// Event type.
    pub kind: TimelineEventType,
    /// Content, as signed (or as redacted).
    pub content: Box<RawJsonValue>,
    /// Present for state events.
    pub state_key: Option<String>,
    /// The events this one follows.
    pub prev_events: Vec<OwnedEventId>,
    /// The state events that authorise it.
    pub auth_events: Vec<OwnedEventId>,
    /// For redactions: the redacted event (top level before v11, in content since).
    pub redacts: Option<OwnedEventId>,
    /// Depth in the room DAG.
    pub depth: UInt,
    /// Global stream position (0 while not yet stored).
    pub stream_ordering: i64,
    /// The redaction that applies to it.
    pub redacted_by: Option<OwnedEventId>,
    /// `(device, txn_id)` it was sent with.
    pub txn: Option<(String, String)>,
    /// Whether the PDU itself names its room (a v12 create event does not).
    names_room: bool,
}

impl Pdu {
    /// Reads a PDU's JSON; `event_id` and `room_id` come from where it is stored.
    pub fn from_json(
        event_id: OwnedEventId,
        room_id: &RoomId,
        json: &str,
    ) -> Result<Self, serde_json::Error> {
        let fields: Fields = serde_json::from_str(json)?;
        let redacts = fields.redacts.or_else(|| {
            #[derive(Deserialize)]
            struct Redacts {
                redacts: Option<OwnedEventId>,
            }
            serde_json::from_str::<Redacts>(fields.content.get())
                .ok()
                .and_then(|r| r.redacts)
        });
        let names_room = fields.room_id.is_some();
        Ok(Self {
            names_room,
            event_id,
            room_id: fields.room_id.unwrap_or_else(|| room_id.to_owned()),
            sender: fields.sender,
            origin_server_ts: fields.origin_server_ts,
            kind: fields.kind,
            content: fields.content,
            state_key: fields.state_key,
            prev_events: fields.prev_events,
            auth_events: fields.auth_events,
            redacts,
            depth: fields.depth,
            stream_ordering: 0,
            redacted_by: None,
            txn: None,
        })
    }

    /// Reads a stored event.
    pub fn from_stored(stored: &StoredEvent) -> Result<Self, anyhow::Error> {
        let event_id = EventId::parse(&stored.event_id)?;
        let room_id = RoomId::parse(&stored.room_id)?;
        let mut pdu = Self::from_json(event_id, &room_id, &stored.json)?;
        pdu.stream_ordering = stored.stream_ordering;
        pdu.redacted_by = stored
            .redacted_by
            .as_deref()
            .map(EventId::parse)
            .transpose()?;
        pdu.txn = stored.txn_device.clone().zip(stored.txn_id.clone());
        Ok(pdu)
    }

    /// The content as a JSON object (empty when it is not one).
    pub fn content_object(&self) -> Map<String, Value> {
        serde_json::from_str(self.content.get()).unwrap_or_default()
    }

    /// The client-server format (`ClientEvent`): `room_id` included unless `sync` is set,
    /// `unsigned.transaction_id` only for the device that sent it.
    pub fn to_client(&self, now_ms: i64, viewer_device: Option<&str>, sync: bool) -> Value {
        let mut event = Map::new();
        event.insert(
            "content".to_owned(),
            serde_json::from_str(self.content.get()).unwrap_or(Value::Object(Map::new())),
        );
        event.insert("event_id".to_owned(), Value::from(self.event_id.as_str()));
        event.insert(
            "origin_server_ts".to_owned(),
            Value::from(u64::from(self.origin_server_ts.get())),
        );
        event.insert("sender".to_owned(), Value::from(self.sender.as_str()));
        event.insert("type".to_owned(), Value::from(self.kind.to_string()));
        if !sync {
            event.insert("room_id".to_owned(), Value::from(self.room_id.as_str()));
        }
        if let Some(state_key) = &self.state_key {
            event.insert("state_key".to_owned(), Value::from(state_key.as_str()));
        }
        if let Some(redacts) = &self.redacts {
            event.insert("redacts".to_owned(), Value::from(redacts.as_str()));
        }
        let mut unsigned = Map::new();
        let age = now_ms.saturating_sub(i64::from(self.origin_server_ts.get()));
        unsigned.insert("age".to_owned(), Value::from(age.max(0)));
        if let (Some((device, txn_id)), Some(viewer)) = (&self.txn, viewer_device)
            && device == viewer
        {
            unsigned.insert("transaction_id".to_owned(), Value::from(txn_id.as_str()));
        }
        event.insert("unsigned".to_owned(), Value::Object(unsigned));
        Value::Object(event)
    }

    /// The stripped form shown to invited and knocking users.
    pub fn to_stripped(&self) -> Value {
        serde_json::json!({
            "content": serde_json::from_str::<Value>(self.content.get()).unwrap_or(Value::Null),
            "sender": self.sender,
            "state_key": self.state_key,
            "type": self.kind.to_string(),
        })
    }
}

impl state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.names_room.then_some(&*self.room_id)
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawJsonValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::referenced_ids;

    #[test]
    fn references_read_in_both_forms() {
        let v10 = r#"{"prev_events":["$a","$b"],"auth_events":["$c"]}"#;
        assert_eq!(referenced_ids(v10, "prev_events"), ["$a", "$b"]);
        assert_eq!(referenced_ids(v10, "auth_events"), ["$c"]);
        let v1 = r#"{"prev_events":[["$a:x.org",{"sha256":"abc"}]],"auth_events":[]}"#;
        assert_eq!(referenced_ids(v1, "prev_events"), ["$a:x.org"]);
        assert!(referenced_ids(v1, "auth_events").is_empty());
        assert!(referenced_ids(r#"{"prev_events":[7]}"#, "prev_events").is_empty());
    }
}
