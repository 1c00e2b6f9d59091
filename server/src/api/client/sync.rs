//! `GET /sync`.

use std::{collections::HashSet, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{FromRequest, Request, State},
    response::{IntoResponse, Response},
    routing::get,
};
use ruma::{
    OwnedDeviceId, OwnedUserId,
    api::client::{
        filter::{FilterDefinition, LazyLoadOptions},
        sync::sync_events::{self, v3::Filter},
    },
};

use serde_json::{Value, json};

use crate::{
    http::{
        error::{Error, Result},
        ruma::{Ruma, respond},
    },
    service::{
        Services,
        sync::{EventFilter, SyncOptions, SyncToken, validate_filter},
    },
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_matrix/client/v3/sync", get(sync_route))
        .route("/_matrix/client/r0/sync", get(sync_route))
}

/// A sync request as the wait needs it: read (and its filter looked up) before the handler
/// runs, so that the handler's future — kept for as long as the sync waits — holds this and
/// not the decoded request.
struct SyncRequest {
    user_id: OwnedUserId,
    device_id: OwnedDeviceId,
    options: SyncOptions,
}

impl FromRequest<Arc<Services>> for SyncRequest {
    type Rejection = Error;

    async fn from_request(req: Request, services: &Arc<Services>) -> Result<Self> {
        let req = Box::pin(Ruma::<sync_events::v3::Request>::from_request(
            req, services,
        ))
        .await?;
        let user_id = req.auth.user_id.clone();
        let device_id = req.auth.device_id.clone();
        let options = Box::pin(sync_options(services, req)).await?;
        Ok(Self {
            user_id,
            device_id,
            options,
        })
    }
}

/// # `GET /_matrix/client/v3/sync`
async fn sync_route(State(services): State<Arc<Services>>, request: SyncRequest) -> Response {
    let SyncRequest {
        user_id,
        device_id,
        options,
    } = request;
    // Boxed: the wait happens in here, and this future is kept for as long as it lasts.
    let response = match Box::pin(services.sync(&user_id, device_id.as_str(), options)).await {
        Ok(response) => response,
        Err(error) => return error.into_response(),
    };
    let knock = (!response.rooms.knock.is_empty())
        .then(|| serde_json::to_value(&response.rooms.knock))
        .transpose();
    let rendered = respond(Ok(response));
    let (parts, body) = rendered.into_parts();
    let (Ok(knock), true) = (knock, parts.status.is_success()) else {
        return Response::from_parts(parts, body);
    };
    let Ok(bytes) = Box::pin(axum::body::to_bytes(body, usize::MAX)).await else {
        return Error::Internal(anyhow::anyhow!("reading a sync response")).into_response();
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Error::Internal(anyhow::anyhow!("re-reading a sync response")).into_response();
    };
    with_fields_clients_expect(&mut value, knock);
    (parts, Json(value)).into_response()
}

/// Puts back what ruma leaves out of an empty sync answer but clients' schemas and SyTest
/// (and Synapse) have: `timeline.limited` even when false, `state` and `timeline` of every
/// joined and left room, the top-level `presence`, and knocked rooms (ruma's emptiness
/// check of `rooms` forgets that map).
fn with_fields_clients_expect(value: &mut Value, knock: Option<Value>) {
    // An empty timeline still says where to paginate back from: the sync's position.
    let prev_batch = value["next_batch"]
        .as_str()
        .and_then(|t| SyncToken::parse(t).ok())
        .map(|t| format!("t{}", t.events.saturating_add(1)));
    let Some(top) = value.as_object_mut() else {
        return;
    };
    top.entry("presence")
        .or_insert_with(|| json!({"events": []}));
    let rooms = top.entry("rooms").or_insert_with(|| json!({}));
    if let (Some(knock), Some(rooms)) = (knock, rooms.as_object_mut()) {
        rooms.insert("knock".to_owned(), knock);
    }
    for name in ["join", "leave"] {
        let Some(section) = rooms.get_mut(name).and_then(Value::as_object_mut) else {
            continue;
        };
        for room in section.values_mut().filter_map(Value::as_object_mut) {
            room.entry("account_data")
                .or_insert_with(|| json!({"events": []}));
            if name == "join" {
                room.entry("ephemeral")
                    .or_insert_with(|| json!({"events": []}));
            }
            if !room.contains_key("state_after") {
                room.entry("state").or_insert_with(|| json!({"events": []}));
            }
            let timeline = room
                .entry("timeline")
                .or_insert_with(|| json!({"events": []}));
            if let Some(timeline) = timeline.as_object_mut() {
                timeline.entry("limited").or_insert(Value::Bool(false));
                timeline.entry("events").or_insert_with(|| json!([]));
                if let Some(prev_batch) = &prev_batch {
                    timeline
                        .entry("prev_batch")
                        .or_insert_with(|| Value::from(prev_batch.as_str()));
                }
            }
        }
    }
}

/// What the request and its filter ask for; says the user is present unless told not to.
async fn sync_options(
    services: &Services,
    req: Ruma<sync_events::v3::Request>,
) -> Result<SyncOptions> {
    let b = &req.body;
    let filter = match &b.filter {
        Some(Filter::FilterDefinition(definition)) => definition.clone(),
        // Ids are numbers: text starting as JSON does is a definition that did not parse.
        Some(Filter::FilterId(id)) if id.trim_start().starts_with('{') => {
            return Err(Error::bad_json(
                "The filter is not a valid filter definition (JSON)",
            ));
        }
        Some(Filter::FilterId(id)) => services.stored_filter(&req.auth.user_id, id).await?,
        _ => FilterDefinition::default(),
    };
    validate_filter(&filter)?;
    let mut options = SyncOptions {
        since: b.since.as_deref().map(SyncToken::parse).transpose()?,
        timeout: b.timeout.unwrap_or(Duration::ZERO),
        full_state: b.full_state,
        state_after: b.use_state_after,
        ..SyncOptions::default()
    };
    options.federation_format =
        filter.event_format == ruma::api::client::filter::EventFormat::Federation;
    let room = &filter.room;
    if let Some(limit) = room.timeline.limit {
        options.timeline_limit = usize::try_from(u64::from(limit))
            .unwrap_or(usize::MAX)
            // 0 is allowed: state without a timeline (SyTest, and clients that only want
            // room lists).
            .min(100);
    }
    if let LazyLoadOptions::Enabled {
        include_redundant_members,
    } = room.state.lazy_load_options
    {
        options.lazy_load_members = true;
        options.include_redundant_members = include_redundant_members;
    }
    options.rooms = room.rooms.as_ref().map(|r| r.iter().cloned().collect());
    options.not_rooms = room.not_rooms.iter().cloned().collect::<HashSet<_>>();
    options.include_leave = room.include_leave;
    options.timeline_filter = event_filter(&room.timeline);
    options.state_filter = event_filter(&room.state);
    options.ephemeral_filter = event_filter(&room.ephemeral);
    options.room_account_data_filter = event_filter(&room.account_data);
    options.account_data_filter = filter_of(&filter.account_data);
    options.presence_filter = filter_of(&filter.presence);
    // Syncing says the user is here, unless the client asks otherwise.
    match b.set_presence.as_str() {
        "offline" => {}
        state => {
            services
                .set_presence(&req.auth.user_id, state, None)
                .await?
        }
    }
    Ok(options)
}

/// What a filter's `types`, `not_types`, `senders` and `not_senders` let through.
fn filter_of(filter: &ruma::api::client::filter::Filter) -> EventFilter {
    event_filter_from(
        &filter.types,
        &filter.not_types,
        filter.senders.as_deref(),
        &filter.not_senders,
    )
}

/// [`filter_of`] for a room event filter.
pub(super) fn event_filter(filter: &ruma::api::client::filter::RoomEventFilter) -> EventFilter {
    event_filter_from(
        &filter.types,
        &filter.not_types,
        filter.senders.as_deref(),
        &filter.not_senders,
    )
}

fn event_filter_from(
    types: &Option<Vec<String>>,
    not_types: &[String],
    senders: Option<&[ruma::OwnedUserId]>,
    not_senders: &[ruma::OwnedUserId],
) -> EventFilter {
    EventFilter {
        types: types.clone(),
        not_types: not_types.to_vec(),
        senders: senders.map(|s| s.iter().map(ToString::to_string).collect()),
        not_senders: not_senders.iter().map(ToString::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waiting sync keeps its handler's future: it must not grow with the decoded request
    /// (whose inline filter alone is kilobytes) or with the steps before the wait.
    #[tokio::test]
    async fn a_waiting_sync_keeps_a_small_future() {
        let dir = tempfile_dir();
        let mut config = crate::Config::from_toml_with_env("", Vec::new()).expect("defaults");
        config.database.url = format!("sqlite:{}", dir.join("db.sqlite").display());
        config.media.directory = dir.join("media").display().to_string();
        let services = crate::server::services(config, Arc::new(crate::clock::SystemClock))
            .await
            .expect("services");
        let request = SyncRequest {
            user_id: ruma::owned_user_id!("@a:localhost"),
            device_id: "D".into(),
            options: SyncOptions::default(),
        };
        let handler = sync_route(State(services.clone()), request);
        let extractor =
            SyncRequest::from_request(Request::new(axum::body::Body::empty()), &services);
        let (handler, extractor) = (
            std::mem::size_of_val(&handler),
            std::mem::size_of_val(&extractor),
        );
        println!("sync handler future: {handler} bytes, extractor: {extractor} bytes");
        assert!(
            handler <= 2560 && extractor <= 2048,
            "{handler} / {extractor} bytes"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("matrixon-sync-size-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
