//! Filling the gap before an event another server pushed when its `prev_events` are not
//! here (this server was down, or the sender caught up with only the room's latest event,
//! as Synapse does): the missing events are asked for with `/get_missing_events` and
//! appended, oldest first, before it.

use std::collections::HashMap;

use ruma::{CanonicalJsonValue, EventId, OwnedEventId, RoomId, ServerName};
use serde_json::value::RawValue as RawJsonValue;

use super::joins::percent;
use crate::{http::error::Result, service::Services};

/// Requests per gap (Synapse answers at most 20 events to each).
const ROUNDS: usize = 5;
/// Events asked for per request.
const PER_ROUND: u64 = 20;

#[derive(serde::Deserialize)]
struct Missing {
    #[serde(default)]
    events: Vec<Box<RawJsonValue>>,
}

/// The `prev_events` of a PDU object.
fn prev_events(object: &ruma::CanonicalJsonObject) -> Vec<String> {
    match object.get("prev_events") {
        // Ids, or `[id, hashes]` pairs in room versions 1 and 2.
        Some(CanonicalJsonValue::Array(ids)) => ids
            .iter()
            .filter_map(|id| match id {
                CanonicalJsonValue::String(id) => Some(id.clone()),
                CanonicalJsonValue::Array(pair) => match pair.first() {
                    Some(CanonicalJsonValue::String(id)) => Some(id.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl Services {
    /// The `prev_events` of `object` this server does not have.
    pub(super) async fn unknown_prev_events(
        &self,
        object: &ruma::CanonicalJsonObject,
    ) -> Result<Vec<String>> {
        let prev = prev_events(object);
        let known: Vec<String> = self
            .store
            .events(&prev)
            .await?
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        Ok(prev.into_iter().filter(|id| !known.contains(id)).collect())
    }

    /// Fetches from `origin` the events between this server's latest in `room_id` and
    /// `latest`, and appends those that check out, oldest first: how many were appended.
    pub(super) async fn fill_gap(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        version: &str,
        latest: &EventId,
    ) -> Result<usize> {
        let Some(room) = self.store.room(room_id.as_str()).await? else {
            return Ok(0);
        };
        let path = format!(
            "/_matrix/federation/v1/get_missing_events/{}",
            percent(room_id.as_str())
        );
        let mut fetched: HashMap<OwnedEventId, (i64, String, ruma::CanonicalJsonObject)> =
            HashMap::new();
        let mut from = vec![latest.to_string()];
        for _ in 0..ROUNDS {
            let body = serde_json::json!({
                "earliest_events": room.extremities,
                "latest_events": from,
                "limit": PER_ROUND,
                "min_depth": 0,
            });
            let answer = self
                .federation_json(
                    origin,
                    http::Method::POST,
                    &path,
                    Some(&body),
                    self.federation.timeout,
                )
                .await?;
            let Ok(answer) = serde_json::from_value::<Missing>(answer) else {
                break;
            };
            let mut added = 0;
            for raw in answer.events.iter().take(2 * PER_ROUND as usize) {
                let checked = match self.checked_pdu(version, raw).await {
                    Ok(checked) => checked,
                    Err(error) => {
                        tracing::info!(%origin, %room_id, %error, "refused a missing event");
                        continue;
                    }
                };
                let in_room = matches!(
                    checked.object.get("room_id"),
                    Some(CanonicalJsonValue::String(r)) if r == room_id.as_str()
                );
                if !in_room || fetched.contains_key(&checked.event_id) {
                    continue;
                }
                let depth = match checked.object.get("depth") {
                    Some(CanonicalJsonValue::Integer(d)) => i64::from(*d),
                    _ => 0,
                };
                fetched.insert(checked.event_id, (depth, checked.json, checked.object));
                added += 1;
            }
            if added == 0 {
                break;
            }
            // Onwards from the fetched events whose predecessors are still missing.
            from.clear();
            for (id, (_, _, object)) in &fetched {
                let unknown = self.unknown_prev_events(object).await?;
                if unknown
                    .iter()
                    .any(|p| !fetched.keys().any(|k| k.as_str() == p))
                {
                    from.push(id.to_string());
                }
            }
            if from.is_empty() {
                break;
            }
        }
        let mut ordered: Vec<(i64, OwnedEventId, String)> = fetched
            .into_iter()
            .map(|(id, (depth, json, _))| (depth, id, json))
            .collect();
        ordered.sort();
        let mut appended = 0;
        for (_, event_id, json) in ordered {
            match self.append_remote(room_id, &event_id, &json).await {
                Ok(_) => appended += 1,
                Err(why) => tracing::info!(%origin, %event_id, %why, "refused a missing event"),
            }
        }
        Ok(appended)
    }
}
