//! A long poll woken by new room events alone: its answer is those events, taken from the
//! shared log of recent events, plus the rooms' unread counts — one query per room with
//! news instead of a whole sync's worth. Anything the log cannot answer exactly (a state
//! event, the user's own membership, a limited timeline, relations to bundle, a filter)
//! goes the whole way.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ruma::{
    OneTimeKeyAlgorithm, OwnedRoomId, RoomId, UInt, UserId,
    api::client::sync::sync_events::v3::{JoinedRoom, Response, State, StateEvents},
};

use super::{SyncOptions, SyncToken, recent::Recent};
use crate::{
    http::{
        error::{Error, Result},
        ruma::to_raw,
    },
    service::{Services, rooms::Pdu},
};

/// What a waiting sync's empty answer rested on.
pub(super) struct Waited {
    /// The position it reached.
    pub token: SyncToken,
    /// The rooms the user was joined to (whether the filter shows them or not).
    pub joined: HashSet<OwnedRoomId>,
    /// The device's key counts it gave (unchanged while only room events happen: a claim
    /// counts as another change).
    pub one_time_keys: BTreeMap<OneTimeKeyAlgorithm, UInt>,
    /// The device's unused fallback key types it gave.
    pub fallback_keys: Option<Vec<OneTimeKeyAlgorithm>>,
    /// The user's change counter read before it began.
    pub changes: u64,
}

impl Waited {
    /// The answer when the wait ends with nothing new: the same empty answer again.
    pub(super) fn empty_answer(&self) -> Response {
        let mut response = Response::new(self.token.to_string());
        response.device_one_time_keys_count = self.one_time_keys.clone();
        response.device_unused_fallback_key_types = self.fallback_keys.clone();
        response
    }
}

impl Services {
    /// The answer to a sync woken by room events only; `None` when it needs the whole way.
    pub(super) async fn woken_sync(
        &self,
        user_id: &UserId,
        device_id: &str,
        options: &SyncOptions,
        waited: &Waited,
    ) -> Result<Option<Response>> {
        if !options.timeline_filter.is_empty()
            || !options.state_filter.is_empty()
            || options.full_state
            || options.include_redundant_members
            || options.federation_format
        {
            return Ok(None);
        }
        let window = self
            .recent
            .current(&self.store, self.bus.events_position())
            .await?;
        let Some(new) = window.after(waited.token.events) else {
            return Ok(None);
        };
        let mut by_room: BTreeMap<&str, Vec<&Recent>> = BTreeMap::new();
        for recent in new {
            let event = &recent.stored;
            if event.kind == "m.room.member" && event.state_key.as_deref() == Some(user_id.as_str())
            {
                return Ok(None);
            }
            let Ok(room_id) = RoomId::parse(event.room_id.as_str()) else {
                continue;
            };
            if !waited.joined.contains(&room_id) {
                continue;
            }
            // State, in a room the filter shows or not (a member coming or going changes
            // device lists): the whole way.
            if event.state_key.is_some() {
                return Ok(None);
            }
            let shown = !options.not_rooms.contains(&room_id)
                && options.rooms.as_ref().is_none_or(|r| r.contains(&room_id));
            if shown {
                by_room.entry(&event.room_id).or_default().push(recent);
            }
        }
        // An event of the window relating to one about to be sent would need bundling.
        let sending: BTreeSet<&str> = by_room
            .values()
            .flatten()
            .map(|e| e.stored.event_id.as_str())
            .collect();
        if new.iter().any(|e| {
            e.stored
                .relates_to
                .as_deref()
                .is_some_and(|t| sending.contains(t))
        }) {
            return Ok(None);
        }
        let next = SyncToken {
            events: window.high,
            ..waited.token
        };
        let mut response = Response::new(next.to_string());
        response.device_one_time_keys_count = waited.one_time_keys.clone();
        response.device_unused_fallback_key_types = waited.fallback_keys.clone();
        let now = self.now_ms();
        for (room, events) in by_room {
            if events.len() > options.timeline_limit {
                // Limited: the state between the token and the timeline is the whole path's.
                return Ok(None);
            }
            let Ok(room_id) = RoomId::parse(room) else {
                continue;
            };
            let mut joined = JoinedRoom::new();
            joined.timeline.prev_batch = events
                .first()
                .map(|e| format!("t{}", e.stored.stream_ordering));
            for event in &events {
                let Some(pdu) = &event.pdu else {
                    return Ok(None);
                };
                joined
                    .timeline
                    .events
                    .push(to_raw(&pdu.to_client(now, Some(device_id), true))?);
            }
            let members = if options.lazy_load_members {
                self.lazy_members_for(&room_id, user_id, device_id, &events, (waited, next))
                    .await?
            } else {
                StateEvents::new()
            };
            joined.state = if options.state_after {
                State::After(members)
            } else {
                State::Before(members)
            };
            let (unread, highlights) = self
                .unread_counts
                .get(&self.store, room, user_id.as_str())
                .await?;
            joined.unread_notifications.notification_count = UInt::new(unread.max(0) as u64);
            joined.unread_notifications.highlight_count = UInt::new(highlights.max(0) as u64);
            response.rooms.join.insert(room_id.to_owned(), joined);
        }
        Ok(Some(response))
    }

    /// Lazy loading: the member events of the timeline's senders this device was not sent
    /// yet (the window holds no state events, so their current ones are the ones to send).
    async fn lazy_members_for(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        device_id: &str,
        events: &[&Recent],
        (waited, next): (&Waited, SyncToken),
    ) -> Result<StateEvents> {
        let key = format!("{user_id}|{device_id}|{room_id}");
        let sent = self.lazy_members.sent(&key, waited.token.events);
        let state = self
            .store
            .shared_state_group(events.first().and_then(|e| e.stored.state_before))
            .await?;
        let needed: HashMap<String, String> = events
            .iter()
            .map(|e| e.stored.sender.as_str())
            .chain(std::iter::once(user_id.as_str()))
            .filter_map(|member| {
                let id = state.get(&("m.room.member".to_owned(), member.to_owned()))?;
                Some((member.to_owned(), id.clone()))
            })
            .collect();
        let missing: Vec<String> = needed
            .iter()
            .filter(|(member, id)| sent.get(member.as_str()) != Some(*id))
            .map(|(_, id)| id.clone())
            .collect();
        self.lazy_members.record(
            &key,
            needed.into_iter(),
            Some(waited.token.events),
            next.events,
        );
        let mut members = StateEvents::new();
        if missing.is_empty() {
            return Ok(members);
        }
        for stored in self.store.events(&missing).await? {
            let pdu = Pdu::from_stored(&stored).map_err(Error::Internal)?;
            members.events.push(to_raw(&pdu.to_client(
                self.now_ms(),
                Some(device_id),
                true,
            ))?);
        }
        Ok(members)
    }
}
