//! Peeking: following a world-readable room's new events (`GET /events?room_id=`) without
//! joining it, as Synapse allows guests and users to.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};

use crate::{
    http::error::{Error, Result},
    service::{Services, sync::SyncToken},
};

/// How long a peek waits before looking again by itself: a peeker is woken by the events of
/// this instance only, so events written by another instance are found by looking.
const RECHECK: Duration = Duration::from_secs(2);

/// Who is peeking into which room on this instance (the count is per user: several
/// requests may peek at once).
#[derive(Default)]
pub struct Peekers {
    rooms: Mutex<HashMap<OwnedRoomId, HashMap<OwnedUserId, usize>>>,
}

impl Peekers {
    /// The users peeking into a room, to be woken with its members.
    pub fn of(&self, room_id: &RoomId) -> Vec<OwnedUserId> {
        self.rooms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(room_id)
            .map(|users| users.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn enter(&self, room_id: &RoomId, user_id: &UserId) {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        *rooms
            .entry(room_id.to_owned())
            .or_default()
            .entry(user_id.to_owned())
            .or_default() += 1;
    }

    fn leave(&self, room_id: &RoomId, user_id: &UserId) {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(users) = rooms.get_mut(room_id) {
            if let Some(count) = users.get_mut(user_id) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    users.remove(user_id);
                }
            }
            if users.is_empty() {
                rooms.remove(room_id);
            }
        }
    }
}

/// Takes a peeker off the list when its request ends, however it ends.
struct Peeking<'a> {
    peekers: &'a Peekers,
    room_id: &'a RoomId,
    user_id: &'a UserId,
}

impl Drop for Peeking<'_> {
    fn drop(&mut self) {
        self.peekers.leave(self.room_id, self.user_id);
    }
}

/// What a peek found: the room's new events, its receipts and typing (`m.receipt`,
/// `m.typing`, with `room_id`), its members' presence changes, all as clients see them, and
/// the position reached in each stream.
pub struct Peeked {
    /// Room events after the starting position.
    pub events: Vec<Value>,
    /// The room's new receipts and its typing users when they changed.
    pub ephemeral: Vec<Value>,
    /// `m.presence` events of the room's members that changed after the starting serial.
    pub presence: Vec<Value>,
    /// The positions reached (events, receipts, typing, presence).
    pub upto: SyncToken,
}

impl Services {
    /// What changed in a world-readable room after `from` (its events, receipts and typing,
    /// its members' presence), waiting up to `timeout` for something. 403 for a room that
    /// is not world-readable (join it to follow it).
    pub async fn peek(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        from: &SyncToken,
        timeout: Duration,
        limit: i64,
    ) -> Result<Peeked> {
        let (after, after_presence) = (from.events, from.presence);
        if self.current_visibility(room_id).await? != "world_readable" {
            return Err(Error::forbidden(format!(
                "Join {room_id} to follow its events: its history is not world-readable"
            )));
        }
        let _peeking = Peeking {
            peekers: &self.peekers,
            room_id,
            user_id,
        };
        self.peekers.enter(room_id, user_id);
        let mut deadline = tokio::time::Instant::now() + timeout;
        let subscription = self.bus.subscribe(user_id);
        loop {
            let notified = subscription.waiter.notify.notified();
            tokio::pin!(notified);
            // Registered before reading, so an event written in between still wakes us.
            notified.as_mut().enable();
            let presence_upto = self.presence.serial();
            let events = self
                .store
                .room_events(room_id.as_str(), after, i64::MAX, true, limit)
                .await?;
            let now_ms = self.now_ms();
            let mut presence = Vec::new();
            if presence_upto > after_presence {
                for member in self.store.room_members(room_id.as_str(), "join").await? {
                    let Ok(member) = UserId::parse(member.as_str()) else {
                        continue;
                    };
                    if let Some(state) = self.presence.get(&member)
                        && state.serial > after_presence
                        && state.serial <= presence_upto
                    {
                        presence.push(crate::service::presence::presence_event(
                            &member, &state, now_ms,
                        ));
                    }
                }
            }
            let events_upto = events.last().map_or(after, |e| e.stream_ordering);
            let mut ephemeral = Vec::new();
            let receipts_upto = self.store.max_receipt_stream().await?.max(from.receipts);
            if receipts_upto > from.receipts
                && let Some(mut receipts) = self
                    .receipt_event(room_id, user_id, from.receipts, receipts_upto)
                    .await?
            {
                receipts["room_id"] = Value::from(room_id.as_str());
                ephemeral.push(receipts);
            }
            let typing_upto = self.typing.serial().max(from.typing);
            let (typed_at, typing) = self.typing.in_room(room_id, now_ms);
            if typed_at > from.typing && typed_at <= typing_upto {
                ephemeral.push(json!({
                    "type": "m.typing",
                    "room_id": room_id,
                    "content": { "user_ids": typing },
                }));
            }
            let now = tokio::time::Instant::now();
            if !events.is_empty()
                || !presence.is_empty()
                || !ephemeral.is_empty()
                || now >= deadline
            {
                let visible = self.visible_events(room_id, user_id, events).await?;
                return Ok(Peeked {
                    events: self.client_events(&visible, None, false).await?,
                    ephemeral,
                    presence,
                    upto: SyncToken {
                        events: events_upto,
                        receipts: receipts_upto,
                        typing: typing_upto,
                        presence: presence_upto.max(after_presence),
                        ..*from
                    },
                });
            }
            let wait = (deadline - now).min(RECHECK);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(wait) => {}
                // Stopping: answer with what there is on the next pass.
                _ = self.bus.closing() => deadline = tokio::time::Instant::now(),
            }
        }
    }
}
