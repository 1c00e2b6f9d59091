//! The deprecated pre-`/sync` endpoints that clients still call: `GET /initialSync`,
//! `GET /rooms/{roomId}/initialSync` (Element Web asks it for a room it has not joined and
//! offers to join on 403) and the `GET /events` stream. Built on `/sync` and `/messages`.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::Uri,
    routing::get,
};
use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::{
    http::{
        auth::Authenticated,
        error::{Error, Result},
        ruma::query_params,
    },
    service::{
        Services,
        presence::presence_event,
        sync::{EventFilter, SyncOptions, SyncToken},
        timeline::PageQuery,
    },
};

/// Events per room when `limit` is not given (Synapse's default).
const DEFAULT_LIMIT: usize = 10;
/// Most events per room one legacy answer holds.
const MAX_LIMIT: usize = 100;
/// How long `GET /events` waits without `timeout` (Synapse's default).
const DEFAULT_EVENTS_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a peek waits (as a sync's longest wait).
const MAX_EVENTS_TIMEOUT: Duration = Duration::from_secs(300);

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    ["r0", "v3"].iter().fold(router, |router, version| {
        let prefix = format!("/_matrix/client/{version}");
        router
            .route(&format!("{prefix}/initialSync"), get(initial_sync))
            .route(
                &format!("{prefix}/rooms/{{room_id}}/initialSync"),
                get(room_initial_sync),
            )
            .route(&format!("{prefix}/events"), get(events))
    })
}

/// `limit` from the query: 400 when present and not a number.
fn limit(params: &std::collections::HashMap<String, String>) -> Result<usize> {
    params.get("limit").map_or(Ok(DEFAULT_LIMIT), |l| {
        l.parse::<usize>()
            .map(|l| l.min(MAX_LIMIT))
            .map_err(|_| Error::invalid_param("limit must be a number"))
    })
}

/// The events of a sync section's list (`{"events": […]}`), each with `room_id` set.
fn events_of(section: &Value, room_id: Option<&str>) -> Vec<Value> {
    let Some(list) = section.get("events").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .cloned()
        .map(|mut event| {
            if let (Some(room_id), Some(object)) = (room_id, event.as_object_mut()) {
                object.insert("room_id".to_owned(), Value::from(room_id));
            }
            v1_event(event)
        })
        .collect()
}

/// An event as the pre-sync API gave it: the sender also as `user_id` (where SyTest and
/// old clients read it, as Synapse still writes it).
fn v1_event(mut event: Value) -> Value {
    if let Some(object) = event.as_object_mut()
        && let Some(sender) = object.get("sender").cloned()
    {
        object.entry("user_id").or_insert(sender);
    }
    event
}

/// Presence events in the legacy form: the user also in `content.user_id` (where the
/// pre-sync API and SyTest read it).
fn legacy_presence(mut events: Vec<Value>) -> Vec<Value> {
    for event in &mut events {
        let sender = event.get("sender").cloned();
        if let (Some(sender), Some(content)) = (sender, event["content"].as_object_mut()) {
            content.insert("user_id".to_owned(), sender);
            content.entry("status_msg").or_insert(Value::Null);
        }
    }
    events
}

/// Current state as `initialSync` gives it: the sync's state block plus the state changes in
/// the timeline (the latest per type and key wins).
fn current_state(room: &Value, room_id: &str) -> Vec<Value> {
    let mut state: Vec<Value> = events_of(&room["state"], Some(room_id));
    for event in events_of(&room["timeline"], Some(room_id)) {
        if event.get("state_key").is_none() {
            continue;
        }
        state.retain(|s| s["type"] != event["type"] || s["state_key"] != event["state_key"]);
        state.push(event);
    }
    state
}

/// # `GET /_matrix/client/v3/initialSync`
async fn initial_sync(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    uri: Uri,
) -> Result<Json<Value>> {
    let params = query_params(uri.query());
    // The pre-sync API's way of being online, as Synapse counts it.
    services
        .set_presence(&session.user_id, "online", None)
        .await?;
    let options = SyncOptions {
        timeline_limit: limit(&params)?.max(1),
        include_leave: params.get("archived").is_some_and(|a| a == "true"),
        ..SyncOptions::default()
    };
    let limit = limit(&params)?;
    let response = services
        .sync(&session.user_id, session.device_id.as_str(), options)
        .await?;
    let rooms = serde_json::to_value(&response.rooms).map_err(|e| Error::Internal(e.into()))?;
    let mut listed = Vec::new();
    let mut receipts = Vec::new();
    for (membership, section) in [("join", "join"), ("leave", "leave"), ("invite", "invite")] {
        let Some(section) = rooms.get(section).and_then(Value::as_object) else {
            continue;
        };
        for (room_id, room) in section {
            let mut entry = Map::new();
            entry.insert("room_id".to_owned(), Value::from(room_id.as_str()));
            entry.insert("membership".to_owned(), Value::from(membership));
            if membership == "invite" {
                let state = events_of(&room["invite_state"], Some(room_id));
                let inviter = state
                    .iter()
                    .find(|e| {
                        e["type"] == "m.room.member" && e["state_key"] == session.user_id.as_str()
                    })
                    .and_then(|e| e.get("sender").cloned());
                entry.insert("invite".to_owned(), json!({ "events": state }));
                if let Some(inviter) = inviter {
                    entry.insert("inviter".to_owned(), inviter);
                }
                listed.push(Value::Object(entry));
                continue;
            }
            let mut chunk = events_of(&room["timeline"], Some(room_id));
            let skip = chunk.len().saturating_sub(limit);
            chunk.drain(..skip);
            entry.insert(
                "messages".to_owned(),
                json!({
                    "chunk": chunk,
                    "start": room["timeline"]["prev_batch"].as_str().unwrap_or(&response.next_batch),
                    "end": response.next_batch,
                }),
            );
            entry.insert(
                "state".to_owned(),
                Value::from(current_state(room, room_id)),
            );
            entry.insert(
                "account_data".to_owned(),
                Value::from(events_of(&room["account_data"], None)),
            );
            let published = match RoomId::parse(room_id) {
                Ok(id) => services.room_published(&id).await?,
                Err(_) => false,
            };
            let visibility = if published { "public" } else { "private" };
            entry.insert("visibility".to_owned(), Value::from(visibility));
            receipts.extend(
                events_of(&room["ephemeral"], Some(room_id))
                    .into_iter()
                    .filter(|e| e["type"] == "m.receipt"),
            );
            listed.push(Value::Object(entry));
        }
    }
    let presence =
        serde_json::to_value(&response.presence).map_err(|e| Error::Internal(e.into()))?;
    let account_data =
        serde_json::to_value(&response.account_data).map_err(|e| Error::Internal(e.into()))?;
    Ok(Json(json!({
        "end": response.next_batch,
        "rooms": listed,
        "presence": legacy_presence(events_of(&presence, None)),
        // As Synapse's: push rules have their own endpoint and are not repeated here.
        "account_data": events_of(&account_data, None)
            .into_iter()
            .filter(|e| e["type"] != crate::service::push::PUSH_RULES_TYPE)
            .collect::<Vec<_>>(),
        "receipts": receipts,
    })))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/initialSync`
///
/// 403 for a room the user may not read (never joined, not world-readable).
async fn room_initial_sync(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    Path(room_id): Path<String>,
    uri: Uri,
) -> Result<Json<Value>> {
    let room_id = super::path_room_id(&room_id)?;
    let params = query_params(uri.query());
    let limit = limit(&params)?;
    let user_id = &session.user_id;
    let state: Vec<Value> = services
        .readable_state(&room_id, user_id)
        .await?
        .into_iter()
        .map(v1_event)
        .collect();
    let (chunk, start, end) = if limit == 0 {
        (Vec::new(), None, None)
    } else {
        let everything = EventFilter::default();
        let query = PageQuery {
            from: None,
            to: None,
            backward: true,
            limit: limit as u64,
            filter: &everything,
            lazy_members: false,
        };
        let page = services
            .messages(&room_id, (user_id, &session.device_id), &query)
            .await?;
        let mut chunk: Vec<Value> = page.events.into_iter().map(v1_event).collect();
        chunk.reverse();
        (chunk, page.end, Some(page.start))
    };
    let membership = services.membership(&room_id, user_id).await?;
    let account_data: Vec<Value> = services
        .store
        .account_data_since(user_id.as_str(), 0, i64::MAX)
        .await?
        .into_iter()
        .filter(|(room, _, _)| room == room_id.as_str())
        .map(|(_, kind, content)| json!({ "type": kind, "content": content }))
        .collect();
    let visibility = if services.room_published(&room_id).await? {
        "public"
    } else {
        "private"
    };
    let now = services.now_ms();
    let mut presence = Vec::new();
    // Presence is for the room's members (and peekers of world-readable rooms); someone who
    // left sees the room as it was, without its members' presence now.
    let members = if matches!(membership.as_deref(), Some("leave" | "ban")) {
        Vec::new()
    } else {
        services
            .store
            .room_members(room_id.as_str(), "join")
            .await?
    };
    for member in members {
        let Ok(member) = UserId::parse(member.as_str()) else {
            continue;
        };
        // Members never seen online are offline (as Synapse lists them).
        presence.push(match services.presence.get(&member) {
            Some(state) => presence_event(&member, &state, now),
            None => json!({
                "type": "m.presence", "sender": member, "content": {"presence": "offline"},
            }),
        });
    }
    Ok(Json(json!({
        "room_id": room_id,
        "membership": membership,
        "messages": {
            "chunk": chunk,
            "start": start.or_else(|| end.clone()),
            "end": end,
        },
        "state": state,
        "presence": legacy_presence(presence),
        "receipts": [],
        "account_data": account_data,
        "visibility": visibility,
    })))
}

/// "Now": where an initial sync would leave the client.
async fn now_token(services: &Services, user_id: &UserId, device: &str) -> Result<SyncToken> {
    let now = services
        .sync(
            user_id,
            device,
            SyncOptions {
                timeline_limit: 1,
                ..SyncOptions::default()
            },
        )
        .await?;
    SyncToken::parse(&now.next_batch)
}

/// # `GET /_matrix/client/v3/events`
///
/// The pre-sync event stream: new timeline events, typing, receipts, account data and
/// presence of the user's rooms after `from` (from now without it), waiting up to
/// `timeout`. Its tokens are sync tokens that never acknowledge to-device messages, which
/// only `/sync` delivers.
async fn events(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    uri: Uri,
) -> Result<Json<Value>> {
    let params = query_params(uri.query());
    let timeout = match params.get("timeout") {
        Some(t) => Duration::from_millis(
            t.parse::<u64>()
                .map_err(|_| Error::invalid_param("timeout must be a number of milliseconds"))?,
        ),
        None => DEFAULT_EVENTS_TIMEOUT,
    };
    if let Some(limit) = params.get("limit")
        && limit.parse::<u64>().is_err()
    {
        return Err(Error::invalid_param("limit must be a non-negative number"));
    }
    let only_room = params.get("room_id").cloned();
    services
        .set_presence(&session.user_id, "online", None)
        .await?;
    // Guests follow one room at a time, as on Synapse.
    if only_room.is_none() && session.is_guest {
        return Err(Error::new(
            http::StatusCode::FORBIDDEN,
            ruma::api::error::ErrorKind::GuestAccessForbidden,
            "Guests must name the room they follow (room_id)",
        ));
    }
    let device = session.device_id.as_str();
    let from = match params.get("from") {
        // A `/messages` token (initialSync hands those out): events from that position on.
        Some(from) if from.starts_with('t') => {
            let position = services.parse_position(from)?;
            SyncToken {
                events: position.saturating_sub(1).max(0),
                ..now_token(&services, &session.user_id, device).await?
            }
        }
        Some(from) => SyncToken::parse(from)?,
        None => now_token(&services, &session.user_id, device).await?,
    };
    // Following a room one is not in: peeking, for world-readable rooms (403 otherwise).
    if let Some(room) = &only_room {
        let room_id = super::path_room_id(room)?;
        if services
            .membership(&room_id, &session.user_id)
            .await?
            .as_deref()
            != Some("join")
        {
            let peeked = services
                .peek(
                    &room_id,
                    &session.user_id,
                    &from,
                    timeout.min(MAX_EVENTS_TIMEOUT),
                    MAX_LIMIT as i64,
                )
                .await?;
            let end = SyncToken {
                to_device: 0,
                ..peeked.upto
            };
            let mut chunk: Vec<Value> = peeked.events.into_iter().map(v1_event).collect();
            chunk.extend(peeked.ephemeral);
            chunk.extend(legacy_presence(peeked.presence));
            return Ok(Json(json!({
                "start": from.to_string(),
                "end": end.to_string(),
                "chunk": chunk,
            })));
        }
    }
    let since = SyncToken {
        to_device: 0,
        ..from
    };
    let response = services
        .sync(
            &session.user_id,
            device,
            SyncOptions {
                since: Some(since),
                timeout,
                timeline_limit: MAX_LIMIT,
                ..SyncOptions::default()
            },
        )
        .await?;
    let end = SyncToken {
        to_device: 0,
        ..SyncToken::parse(&response.next_batch)?
    };
    let rooms = serde_json::to_value(&response.rooms).map_err(|e| Error::Internal(e.into()))?;
    let mut chunk = Vec::new();
    for section in ["join", "leave"] {
        let Some(section) = rooms.get(section).and_then(Value::as_object) else {
            continue;
        };
        for (room_id, room) in section {
            if only_room.as_ref().is_some_and(|only| only != room_id) {
                continue;
            }
            for part in ["timeline", "ephemeral", "account_data"] {
                chunk.extend(events_of(&room[part], Some(room_id)));
            }
        }
    }
    if let Some(invites) = rooms.get("invite").and_then(Value::as_object) {
        for (room_id, room) in invites {
            chunk.extend(
                events_of(&room["invite_state"], Some(room_id))
                    .into_iter()
                    .filter(|e| {
                        e["type"] == "m.room.member" && e["state_key"] == session.user_id.as_str()
                    }),
            );
        }
    }
    if only_room.is_none() {
        let presence =
            serde_json::to_value(&response.presence).map_err(|e| Error::Internal(e.into()))?;
        let account_data =
            serde_json::to_value(&response.account_data).map_err(|e| Error::Internal(e.into()))?;
        chunk.extend(events_of(&account_data, None));
        chunk.extend(legacy_presence(events_of(&presence, None)));
    }
    Ok(Json(json!({
        "start": from.to_string(),
        "end": end.to_string(),
        "chunk": chunk,
    })))
}
