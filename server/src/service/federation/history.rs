//! A room's history for the servers in it: single events, the state and auth chain at an
//! event, events before some (`/backfill`) and between some (`/get_missing_events`). A server
//! reads a room only while one of its users is joined to it, or when it is world-readable.

use std::collections::HashSet;

use ruma::{EventId, RoomId, ServerName};
use serde_json::value::RawValue as RawJsonValue;

use crate::{
    http::error::{Error, Result},
    service::{Services, rooms::pdu::referenced_ids},
    store::StoredEvent,
};

/// Most events one `/backfill` or `/get_missing_events` answer holds.
const MAX_HISTORY: usize = 100;

/// A stored PDU as a raw JSON value for an answer.
pub fn raw_pdu(event: StoredEvent) -> Result<Box<RawJsonValue>> {
    RawJsonValue::from_string(event.json).map_err(|e| Error::Internal(e.into()))
}

/// Where a walk back through a room's `prev_events` starts and ends.
pub struct Walk<'a> {
    /// The events it starts from.
    pub from: &'a [String],
    /// Events it does not go past (nor returns).
    pub stop: &'a [String],
    /// Whether `from` themselves are returned (`/backfill`) or only what precedes them.
    pub include_start: bool,
    /// Events below this depth are left out.
    pub min_depth: i64,
    /// Most events returned (capped at [`MAX_HISTORY`]).
    pub limit: usize,
}

#[derive(serde::Deserialize)]
struct Depth {
    #[serde(default)]
    depth: i64,
}

impl Services {
    /// 403 unless `origin` has a member joined to `room_id` or the room is world-readable,
    /// and the room's server ACL lets it in.
    pub async fn ensure_server_may_read(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
    ) -> Result<()> {
        self.ensure_acl_allows(origin, room_id).await?;
        if self
            .servers_in_room(room_id)
            .await?
            .iter()
            .any(|s| s == origin)
        {
            return Ok(());
        }
        let readable = self
            .state_content(room_id, "m.room.history_visibility", "")
            .await?
            .and_then(|c| c.get("history_visibility")?.as_str().map(str::to_owned))
            .is_some_and(|v| v == "world_readable");
        if readable {
            return Ok(());
        }
        Err(Error::forbidden(format!("{origin} is not in {room_id}")))
    }

    /// An event for `origin` (`/event/{eventId}`).
    pub async fn federation_event(
        &self,
        origin: &ServerName,
        event_id: &EventId,
    ) -> Result<StoredEvent> {
        let event = self
            .store
            .event(event_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("No event {event_id} here")))?;
        let room_id = RoomId::parse(&event.room_id).map_err(|e| Error::Internal(e.into()))?;
        self.ensure_server_may_read(origin, &room_id).await?;
        Ok(event)
    }

    /// The state before `event_id` in `room_id`, and its auth chain (`/state`, `/state_ids`).
    pub async fn state_at_event(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<(Vec<StoredEvent>, Vec<StoredEvent>)> {
        let event = self.federation_event(origin, event_id).await?;
        if event.room_id != room_id.as_str() {
            return Err(Error::not_found(format!(
                "No event {event_id} in {room_id}"
            )));
        }
        let ids: Vec<String> = self
            .store
            .state_of_group(event.state_before)
            .await?
            .into_values()
            .collect();
        let state = self.store.events(&ids).await?;
        let chain = self.auth_chain(room_id, &state).await?;
        Ok((state, chain))
    }

    /// The auth chain of one event (`/event_auth`).
    pub async fn event_auth_chain(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Vec<StoredEvent>> {
        let event = self.federation_event(origin, event_id).await?;
        if event.room_id != room_id.as_str() {
            return Err(Error::not_found(format!(
                "No event {event_id} in {room_id}"
            )));
        }
        self.auth_chain(room_id, std::slice::from_ref(&event)).await
    }

    /// The room's event nearest to `ts` in the given direction (`/timestamp_to_event`), for
    /// a server that may read the room: `(event id, origin_server_ts)`.
    pub async fn event_near_ts_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        ts: i64,
        forward: bool,
    ) -> Result<(String, i64)> {
        self.ensure_server_may_read(origin, room_id).await?;
        self.store
            .events_near_ts(room_id.as_str(), ts, forward, i64::MAX, (0, 1))
            .await?
            .pop()
            .map(|e| (e.event_id, e.origin_server_ts))
            .ok_or_else(|| Error::not_found("No event in that direction from that time"))
    }

    /// Events reached by walking back `prev_events` as `walk` says.
    pub async fn walk_back(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        walk: Walk<'_>,
    ) -> Result<Vec<StoredEvent>> {
        let Walk {
            from,
            stop,
            include_start,
            min_depth,
            limit,
        } = walk;
        self.ensure_server_may_read(origin, room_id).await?;
        let limit = limit.min(MAX_HISTORY);
        let mut seen: HashSet<String> = stop.iter().cloned().collect();
        let mut found = Vec::new();
        let mut next: Vec<String> = if include_start {
            from.to_vec()
        } else {
            self.store
                .events(from)
                .await?
                .iter()
                .filter(|e| e.room_id == room_id.as_str())
                .flat_map(|e| referenced_ids(&e.json, "prev_events"))
                .collect()
        };
        while !next.is_empty() && found.len() < limit {
            next.retain(|id| seen.insert(id.clone()));
            let batch = self.store.events(&next).await?;
            next = Vec::new();
            for event in batch {
                if event.room_id != room_id.as_str() || found.len() >= limit {
                    continue;
                }
                let depth = serde_json::from_str::<Depth>(&event.json).map_or(0, |d| d.depth);
                if depth < min_depth {
                    continue;
                }
                next.extend(referenced_ids(&event.json, "prev_events"));
                found.push(event);
            }
        }
        Ok(found)
    }
}
