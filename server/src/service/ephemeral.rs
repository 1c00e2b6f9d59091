//! Typing notifications (in memory, per instance) and read receipts and markers (stored).

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use ruma::{EventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::Services;
use crate::{
    http::error::{Error, Result},
    store::ReceiptRow,
};

/// Longest a typing notification lasts without being renewed.
const MAX_TYPING: Duration = Duration::from_secs(120);

/// Who is typing where; every change takes the next serial.
#[derive(Default)]
pub struct Typing {
    state: Mutex<TypingState>,
}

#[derive(Default)]
struct TypingState {
    serial: i64,
    rooms: HashMap<OwnedRoomId, (i64, HashMap<OwnedUserId, i64>)>,
}

impl Typing {
    /// The latest serial.
    pub fn serial(&self) -> i64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .serial
    }

    /// Records that `user` is typing until `until_ms`, or stopped (`None`); the new serial.
    pub fn apply(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        until_ms: Option<i64>,
        now_ms: i64,
    ) -> i64 {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.serial += 1;
        let serial = state.serial;
        let room = state.rooms.entry(room_id.to_owned()).or_default();
        room.0 = serial;
        room.1.retain(|_, until| *until > now_ms);
        match until_ms {
            Some(until) => {
                room.1.insert(user_id.to_owned(), until);
            }
            None => {
                room.1.remove(user_id);
            }
        }
        // An emptied room keeps its entry: the serial tells syncs that it changed.
        serial
    }

    /// `(serial of the room's last change, users typing now)`.
    pub fn in_room(&self, room_id: &RoomId, now_ms: i64) -> (i64, Vec<OwnedUserId>) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.rooms.get(room_id) {
            Some((serial, users)) => (
                *serial,
                users
                    .iter()
                    .filter(|(_, until)| **until > now_ms)
                    .map(|(user, _)| user.clone())
                    .collect(),
            ),
            None => (0, Vec::new()),
        }
    }
}

/// The receipt types clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiptKind {
    /// `m.read`: everyone in the room sees it.
    Read,
    /// `m.read.private`: only the user's own devices see it.
    ReadPrivate,
    /// `m.fully_read`: the read marker, kept as room account data.
    FullyRead,
}

impl Services {
    /// Starts (`Some(timeout)`) or stops typing in a room the user is joined to.
    pub async fn set_typing(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.ensure_joined(room_id, user_id).await?;
        let now = self.now_ms();
        let until = timeout
            .map(|t| now.saturating_add(i64::try_from(t.min(MAX_TYPING).as_millis()).unwrap_or(0)));
        self.typing.apply(room_id, user_id, until, now);
        let members: Vec<ruma::OwnedUserId> = self
            .store
            .room_members(room_id.as_str(), "join")
            .await?
            .into_iter()
            .filter_map(|m| UserId::parse(m).ok())
            .collect();
        self.bus
            .typing_changed(room_id, user_id, (until, now), &members);
        if user_id.server_name() == self.config.server_name {
            let edu = json!({
                "edu_type": "m.typing",
                "content": { "room_id": room_id, "user_id": user_id, "typing": until.is_some() },
            });
            self.send_edu_to_room(room_id, edu).await?;
        }
        Ok(())
    }

    /// Records a receipt (or the read marker) for an event of the room.
    pub async fn set_receipt(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        kind: ReceiptKind,
        event_id: &EventId,
        thread_id: Option<&str>,
    ) -> Result<()> {
        self.ensure_joined(room_id, user_id).await?;
        let in_room = self
            .store
            .event(event_id.as_str())
            .await?
            .is_some_and(|e| e.room_id == room_id.as_str());
        if !in_room {
            return Err(Error::not_found(format!(
                "No event {event_id} in {room_id}"
            )));
        }
        let kind = match kind {
            ReceiptKind::FullyRead => {
                return self
                    .store
                    .set_account_data(
                        user_id.as_str(),
                        room_id.as_str(),
                        "m.fully_read",
                        &json!({ "event_id": event_id }).to_string(),
                    )
                    .await
                    .map(|_| self.bus.wake([user_id]))
                    .map_err(Into::into);
            }
            ReceiptKind::Read => "m.read",
            ReceiptKind::ReadPrivate => "m.read.private",
        };
        // Reading a room with notifications lowers the badge: phones hear of it (below).
        let (unread_before, _) = self
            .store
            .notification_counts(room_id.as_str(), &[user_id.as_str()])
            .await?
            .remove(user_id.as_str())
            .unwrap_or_default();
        self.store
            .set_receipt(&ReceiptRow {
                room_id: room_id.to_string(),
                user_id: user_id.to_string(),
                kind: kind.to_owned(),
                thread_id: thread_id.unwrap_or_default().to_owned(),
                event_id: event_id.to_string(),
                ts: self.now_ms(),
            })
            .await?;
        if unread_before > 0 {
            self.push_badge(user_id).await;
        }
        if kind == "m.read" && user_id.server_name() == self.config.server_name {
            let mut data = json!({ "ts": self.now_ms() });
            if let Some(thread) = thread_id {
                data["thread_id"] = Value::from(thread);
            }
            let edu = json!({
                "edu_type": "m.receipt",
                "content": { room_id.as_str(): { "m.read": { user_id.as_str(): {
                    "event_ids": [event_id], "data": data,
                } } } },
            });
            self.send_edu_to_room(room_id, edu).await?;
        }
        if kind == "m.read" {
            self.wake_room(room_id).await
        } else {
            self.bus.wake([user_id]);
            Ok(())
        }
    }

    /// The `m.receipt` content of a room's receipts changed in `(after, upto]`, as `viewer`
    /// may see them (others' private receipts left out); `None` when there are none.
    pub(super) async fn receipt_event(
        &self,
        room_id: &RoomId,
        viewer: &UserId,
        after: i64,
        upto: i64,
    ) -> Result<Option<Value>> {
        let mut content: Map<String, Value> = Map::new();
        for receipt in self
            .store
            .receipts_since(room_id.as_str(), after, upto)
            .await?
        {
            if receipt.kind == "m.read.private" && receipt.user_id != viewer.as_str() {
                continue;
            }
            let mut entry = json!({ "ts": receipt.ts });
            if !receipt.thread_id.is_empty() {
                entry["thread_id"] = Value::from(receipt.thread_id.clone());
            }
            let by_event = content
                .entry(receipt.event_id.clone())
                .or_insert_with(|| json!({}));
            by_event[&receipt.kind][&receipt.user_id] = entry;
        }
        Ok((!content.is_empty()).then(|| json!({ "type": "m.receipt", "content": content })))
    }
}
