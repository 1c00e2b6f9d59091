//! Filling in a room's history from the servers in it (`/backfill`) when a reader scrolls
//! past the start of what this server has: a room joined through another server begins
//! here at the join. Each event fetched is checked (id, signatures, content hash, the
//! authorization rules against its own auth events) and stored below everything here.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use ruma::{CanonicalJsonValue, OwnedEventId, RoomId, ServerName, UserId, state_res};
use serde_json::value::RawValue as RawJsonValue;

use super::joins::percent;
use crate::{
    http::error::{Error, Result},
    service::{
        Services,
        rooms::{Pdu, version_rules},
    },
    store::{PastEvent, StoredEvent},
};

/// Events asked for per request.
const BATCH: usize = 50;
/// Servers tried per attempt.
const SERVERS_TRIED: usize = 3;
/// Most events of one answer whose auth chains are asked for.
const AUTH_CHAINS_ASKED: usize = 5;
/// Most events taken from one auth chain.
const MAX_CHAIN: usize = 500;
/// How long a room whose servers had nothing more is not asked again.
const QUIET_FOR: Duration = Duration::from_secs(30);
/// Most rooms remembered as quiet.
const QUIET_ROOMS: usize = 10_000;
/// Longest wait for one server's answer (a reader is waiting).
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

#[derive(serde::Deserialize)]
struct Backfill {
    #[serde(default)]
    pdus: Vec<Box<RawJsonValue>>,
}

/// Rooms whose history could not be extended lately, so readers at their start do not ask
/// other servers on every page.
#[derive(Default)]
pub(super) struct QuietRooms(std::sync::Mutex<HashMap<String, Instant>>);

impl QuietRooms {
    fn is_quiet(&self, room_id: &RoomId) -> bool {
        let Ok(rooms) = self.0.lock() else {
            return false;
        };
        rooms
            .get(room_id.as_str())
            .is_some_and(|since| since.elapsed() < QUIET_FOR)
    }

    fn mark(&self, room_id: &RoomId) {
        if let Ok(mut rooms) = self.0.lock() {
            if rooms.len() >= QUIET_ROOMS {
                rooms.retain(|_, since| since.elapsed() < QUIET_FOR);
            }
            if rooms.len() < QUIET_ROOMS {
                rooms.insert(room_id.as_str().to_owned(), Instant::now());
            }
        }
    }
}

impl Services {
    /// Fetches the events before the start of `room_id`'s timeline here from a server in
    /// the room, when that start has predecessors this server lacks: how many entered the
    /// timeline (0 when there is nothing more, or nobody answered).
    pub async fn backfill(&self, room_id: &RoomId) -> Result<usize> {
        if !self.config.federation.enabled || self.federation.quiet.is_quiet(room_id) {
            return Ok(0);
        }
        let Some(earliest) = self.store.earliest_timeline_event(room_id.as_str()).await? else {
            return Ok(0);
        };
        let prev = crate::service::rooms::pdu::referenced_ids(&earliest.json, "prev_events");
        let known = self.store.in_timeline(room_id.as_str(), &prev).await?;
        let from: Vec<String> = prev.into_iter().filter(|id| !known.contains(id)).collect();
        if from.is_empty() {
            return Ok(0);
        }
        let room = self
            .store
            .room(room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("No room {room_id} here")))?;
        // The server that sent the earliest event first: it had what came before.
        let mut servers = self.servers_in_room(room_id).await?;
        if let Some(origin) = UserId::parse(earliest.sender.as_str())
            .ok()
            .map(|u| u.server_name().to_owned())
            .filter(|s| *s != self.config.server_name)
        {
            servers.retain(|s| *s != origin);
            servers.insert(0, origin);
        }
        for server in servers.iter().take(SERVERS_TRIED) {
            match self
                .backfill_from(server, room_id, &room.version, &from, &earliest)
                .await
            {
                Ok(0) => {}
                Ok(entered) => return Ok(entered),
                Err(error) => tracing::info!(%room_id, %server, %error, "backfill failed"),
            }
        }
        self.federation.quiet.mark(room_id);
        Ok(0)
    }

    /// One `/backfill` request to `server`, its answer checked and stored.
    async fn backfill_from(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        version: &str,
        from: &[String],
        earliest: &StoredEvent,
    ) -> Result<usize> {
        let mut path = format!(
            "/_matrix/federation/v1/backfill/{}?limit={BATCH}",
            percent(room_id.as_str())
        );
        for id in from.iter().take(20) {
            path.push_str("&v=");
            path.push_str(&percent(id));
        }
        let timeout = self.federation.timeout.min(ANSWER_WITHIN);
        let answer = self
            .federation_json(server, http::Method::GET, &path, None, timeout)
            .await?;
        let answer: Backfill = serde_json::from_value(answer)
            .map_err(|e| Error::bad_request(format!("{server}'s backfill answer: {e}")))?;
        let (_, rules) = version_rules(version)?;
        let mut batch: HashMap<OwnedEventId, (i64, Pdu, String)> = HashMap::new();
        for raw in answer.pdus.iter().take(BATCH * 2) {
            let in_room = serde_json::from_str::<serde_json::Value>(raw.get())
                .ok()
                .and_then(|v| v.get("room_id")?.as_str().map(str::to_owned));
            // A v12 create event names no room; its id is the room's.
            if in_room.as_deref().is_some_and(|r| r != room_id.as_str()) {
                continue;
            }
            let checked = match self.checked_pdu(version, raw).await {
                Ok(checked) => checked,
                Err(error) => {
                    tracing::info!(%server, %room_id, %error, "refused a backfilled event");
                    continue;
                }
            };
            let depth = match checked.object.get("depth") {
                Some(CanonicalJsonValue::Integer(d)) => i64::from(*d),
                _ => 0,
            };
            let pdu = match Pdu::from_json(checked.event_id.clone(), room_id, &checked.json) {
                Ok(pdu) if pdu.room_id == room_id => pdu,
                _ => continue,
            };
            batch.insert(checked.event_id, (depth, pdu, checked.json));
        }
        // Authorised by its own auth events, found here or among the others fetched.
        let mut wanted: Vec<String> = batch
            .values()
            .flat_map(|(_, pdu, _)| pdu.auth_events.iter())
            .filter(|id| !batch.contains_key(*id))
            .map(ToString::to_string)
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let auth = self.stored_auth_events(room_id, &rules, &wanted).await?;
        // Auth events neither here nor in the answer: the events' auth chains, asked for.
        let lacking: Vec<OwnedEventId> = batch
            .values()
            .filter(|(_, pdu, _)| {
                pdu.auth_events
                    .iter()
                    .any(|a| !auth.contains_key(a) && !batch.contains_key(a))
            })
            .map(|(_, pdu, _)| pdu.event_id.clone())
            .take(AUTH_CHAINS_ASKED)
            .collect();
        let mut chains: HashMap<OwnedEventId, (i64, Pdu, String)> = HashMap::new();
        for event_id in &lacking {
            if batch.get(event_id).is_some_and(|(_, pdu, _)| {
                pdu.auth_events.iter().all(|a| {
                    auth.contains_key(a) || batch.contains_key(a) || chains.contains_key(a)
                })
            }) {
                continue;
            }
            for (id, entry) in self
                .fetch_auth_chain(server, room_id, version, event_id)
                .await
            {
                if !auth.contains_key(&id) && !batch.contains_key(&id) {
                    chains.insert(id, entry);
                }
            }
        }
        let mut accepted: Vec<(i64, i64, PastEvent)> = Vec::new();
        let fetched = batch
            .values()
            .map(|entry| (entry, false))
            .chain(chains.values().map(|entry| (entry, true)));
        for ((depth, pdu, json), outlier) in fetched {
            let fetch = |id: &ruma::EventId| {
                auth.get(id)
                    .or_else(|| batch.get(id).map(|(_, pdu, _)| pdu))
                    .or_else(|| chains.get(id).map(|(_, pdu, _)| pdu))
            };
            if let Err(why) =
                state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch)
            {
                tracing::info!(%server, event_id = %pdu.event_id, %why, "refused a backfilled event");
                continue;
            }
            let content = pdu.content_object();
            let relation = content.get("m.relates_to").and_then(|r| {
                Some((
                    r.get("event_id")?.as_str()?.to_owned(),
                    r.get("rel_type")?.as_str()?.to_owned(),
                ))
            });
            accepted.push((
                *depth,
                i64::from(pdu.origin_server_ts.get()),
                PastEvent {
                    event_id: pdu.event_id.to_string(),
                    sender: pdu.sender.to_string(),
                    kind: pdu.kind.to_string(),
                    state_key: pdu.state_key.clone(),
                    origin_server_ts: i64::from(pdu.origin_server_ts.get()),
                    json: json.clone(),
                    relation,
                    outlier,
                },
            ));
        }
        // Newest first: each takes the next lower position.
        accepted.sort_by(|a, b| (b.0, b.1, &b.2.event_id).cmp(&(a.0, a.1, &a.2.event_id)));
        let events: Vec<PastEvent> = accepted.into_iter().map(|(_, _, e)| e).collect();
        let entered = self
            .store
            .insert_past(room_id.as_str(), &events, earliest.state_before)
            .await?;
        tracing::info!(%room_id, %server, fetched = events.len(), entered, "backfilled");
        Ok(entered)
    }

    /// The auth chain of `event_id` as `server` gives it (`/event_auth`), each event
    /// checked for id, signatures and hashes; nothing when it cannot be had.
    async fn fetch_auth_chain(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        version: &str,
        event_id: &OwnedEventId,
    ) -> Vec<(OwnedEventId, (i64, Pdu, String))> {
        let path = format!(
            "/_matrix/federation/v1/event_auth/{}/{}",
            percent(room_id.as_str()),
            percent(event_id.as_str())
        );
        let timeout = self.federation.timeout.min(ANSWER_WITHIN);
        let answer = match self
            .federation_json(server, http::Method::GET, &path, None, timeout)
            .await
        {
            Ok(answer) => answer,
            Err(error) => {
                tracing::info!(%server, %event_id, %error, "no auth chain for a backfilled event");
                return Vec::new();
            }
        };
        let raws: Vec<Box<RawJsonValue>> =
            serde_json::from_value(answer["auth_chain"].clone()).unwrap_or_default();
        let mut chain = Vec::new();
        for raw in raws.iter().take(MAX_CHAIN) {
            let Ok(checked) = self.checked_pdu(version, raw).await else {
                continue;
            };
            let depth = match checked.object.get("depth") {
                Some(CanonicalJsonValue::Integer(d)) => i64::from(*d),
                _ => 0,
            };
            match Pdu::from_json(checked.event_id.clone(), room_id, &checked.json) {
                Ok(pdu) if pdu.room_id == room_id => {
                    chain.push((checked.event_id, (depth, pdu, checked.json)));
                }
                _ => {}
            }
        }
        chain
    }
}
