//! Sending and reading room events: send, redact, state, `/messages`, `/event`, `/context`.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::post,
};
use ruma::{
    UInt,
    api::{
        Direction,
        client::{
            context::get_context,
            message::{get_message_events, send_message_event},
            redact::redact_event,
            room::get_room_event,
            state::{get_state_event_for_key, get_state_events, send_state_event},
        },
    },
    events::TimelineEventType,
};
use serde_json::{Value, json};

use crate::{
    http::{
        auth::Authenticated,
        error::{Error, Result},
        ruma::{JsonBody, RouterExt, Ruma, to_raw},
    },
    service::{Services, rooms::EventDraft, timeline::PageQuery},
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = ["r0", "v3"].iter().fold(router, |router, version| {
        router.route(
            &format!("/_matrix/client/{version}/rooms/{{room_id}}/send/{{event_type}}"),
            post(send_without_txn),
        )
    });
    router
        .ruma(send)
        .ruma(redact)
        .ruma(send_state)
        .ruma(get_state)
        .ruma(get_all_state)
        .ruma(messages)
        .ruma(event)
        .ruma(context)
}

/// Most events one `/messages` or `/context` page returns.
const MAX_PAGE: u64 = 1000;

fn content_of(raw: &serde_json::value::RawValue) -> Result<Value> {
    let content: Value =
        serde_json::from_str(raw.get()).map_err(|e| Error::bad_json(e.to_string()))?;
    if !content.is_object() {
        return Err(Error::bad_json("Event content must be a JSON object"));
    }
    Ok(content)
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/send/{eventType}`
///
/// The pre-r0 form without a transaction id, which SyTest and old bots still use (Synapse
/// keeps it): each request is a new event.
async fn send_without_txn(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    Path((room_id, event_type)): Path<(String, String)>,
    JsonBody(content): JsonBody<Value>,
) -> Result<Json<Value>> {
    let room_id = super::path_room_id(&room_id)?;
    let kind = TimelineEventType::from(event_type);
    if kind == TimelineEventType::RoomRedaction {
        return Err(Error::bad_json("Use the redact endpoint for redactions"));
    }
    if !content.is_object() {
        return Err(Error::bad_json("Event content must be a JSON object"));
    }
    let draft = EventDraft {
        kind,
        content,
        state_key: None,
        redacts: None,
        target_must_be: None,
        replaces: None,
    };
    let event_id = services
        .append(&room_id, &session.user_id, draft, None)
        .await?;
    Ok(Json(json!({ "event_id": event_id })))
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`
async fn send(
    services: Arc<Services>,
    req: Ruma<send_message_event::v3::Request>,
) -> Result<send_message_event::v3::Response> {
    let b = &req.body;
    let kind = TimelineEventType::from(b.event_type.to_string());
    if kind == TimelineEventType::RoomRedaction {
        return Err(Error::bad_json("Use the redact endpoint for redactions"));
    }
    let draft = EventDraft {
        kind,
        content: content_of(b.body.json())?,
        state_key: None,
        redacts: None,
        target_must_be: None,
        replaces: None,
    };
    let event_id = services
        .send_with_txn(
            &b.room_id,
            &req.auth.user_id,
            &req.auth.device_id,
            b.txn_id.as_str(),
            draft,
        )
        .await?;
    Ok(send_message_event::v3::Response::new(event_id))
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
async fn redact(
    services: Arc<Services>,
    req: Ruma<redact_event::v3::Request>,
) -> Result<redact_event::v3::Response> {
    let b = &req.body;
    let mut content = serde_json::json!({});
    if let Some(reason) = &b.reason {
        content["reason"] = Value::from(reason.as_str());
    }
    let draft = EventDraft {
        kind: TimelineEventType::RoomRedaction,
        content,
        state_key: None,
        redacts: Some(b.event_id.clone()),
        target_must_be: None,
        replaces: None,
    };
    let event_id = services
        .send_with_txn(
            &b.room_id,
            &req.auth.user_id,
            &req.auth.device_id,
            b.txn_id.as_str(),
            draft,
        )
        .await?;
    Ok(redact_event::v3::Response::new(event_id))
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
async fn send_state(
    services: Arc<Services>,
    req: Ruma<send_state_event::v3::Request>,
) -> Result<send_state_event::v3::Response> {
    let b = &req.body;
    let kind = b.event_type.to_string();
    let content = content_of(b.body.json())?;
    let event_id = services
        .send_state(&b.room_id, &req.auth.user_id, &kind, &b.state_key, content)
        .await?;
    Ok(send_state_event::v3::Response::new(event_id))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
async fn get_state(
    services: Arc<Services>,
    req: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<get_state_event_for_key::v3::Response> {
    let b = &req.body;
    let event = services
        .readable_state_event(
            &b.room_id,
            &req.auth.user_id,
            &b.event_type.to_string(),
            &b.state_key,
        )
        .await?
        .ok_or_else(|| Error::not_found("No such state event in this room"))?;
    let value = match b.format {
        get_state_event_for_key::v3::StateEventFormat::Event => event,
        _ => event.get("content").cloned().unwrap_or_default(),
    };
    Ok(get_state_event_for_key::v3::Response::new(
        serde_json::value::to_raw_value(&value).map_err(|e| Error::Internal(e.into()))?,
    ))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state`
async fn get_all_state(
    services: Arc<Services>,
    req: Ruma<get_state_events::v3::Request>,
) -> Result<get_state_events::v3::Response> {
    let events = services
        .readable_state(&req.body.room_id, &req.auth.user_id)
        .await?;
    let room_state = events.iter().map(to_raw).collect::<Result<_>>()?;
    Ok(get_state_events::v3::Response::new(room_state))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/messages`
async fn messages(
    services: Arc<Services>,
    req: Ruma<get_message_events::v3::Request>,
) -> Result<get_message_events::v3::Response> {
    let b = &req.body;
    let limit = u64::from(b.limit).clamp(1, MAX_PAGE);
    let filter = super::sync::event_filter(&b.filter);
    let query = PageQuery {
        from: b.from.as_deref(),
        to: b.to.as_deref(),
        backward: b.dir == Direction::Backward,
        limit,
        filter: &filter,
        lazy_members: !b.filter.lazy_load_options.is_disabled(),
    };
    let page = services
        .messages(&b.room_id, (&req.auth.user_id, &req.auth.device_id), &query)
        .await?;
    let mut response = get_message_events::v3::Response::new();
    response.start = page.start;
    response.end = page.end;
    response.chunk = page.events.iter().map(to_raw).collect::<Result<_>>()?;
    response.state = page.state.iter().map(to_raw).collect::<Result<_>>()?;
    Ok(response)
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
async fn event(
    services: Arc<Services>,
    req: Ruma<get_room_event::v3::Request>,
) -> Result<get_room_event::v3::Response> {
    let b = &req.body;
    let event = services
        .readable_event(
            &b.room_id,
            &req.auth.user_id,
            &req.auth.device_id,
            &b.event_id,
        )
        .await?;
    Ok(get_room_event::v3::Response::new(to_raw(&event)?))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
async fn context(
    services: Arc<Services>,
    req: Ruma<get_context::v3::Request>,
) -> Result<get_context::v3::Response> {
    let b = &req.body;
    let limit = u64::from(b.limit).min(MAX_PAGE);
    let context = services
        .context(
            &b.room_id,
            &req.auth.user_id,
            &req.auth.device_id,
            &b.event_id,
            limit,
        )
        .await?;
    let mut response = get_context::v3::Response::new();
    response.start = Some(context.start);
    response.end = Some(context.end);
    response.event = Some(to_raw(&context.event)?);
    response.events_before = context.before.iter().map(to_raw).collect::<Result<_>>()?;
    response.events_after = context.after.iter().map(to_raw).collect::<Result<_>>()?;
    // Lazy loading: only the member events of the events' senders (as Synapse).
    let senders: std::collections::HashSet<&str> = std::iter::once(&context.event)
        .chain(&context.before)
        .chain(&context.after)
        .filter_map(|e| e.get("sender").and_then(serde_json::Value::as_str))
        .collect();
    let lazy = !b.filter.lazy_load_options.is_disabled();
    response.state = context
        .state
        .iter()
        .filter(|e| {
            !lazy
                || e["type"] != "m.room.member"
                || e["state_key"].as_str().is_some_and(|k| senders.contains(k))
        })
        .map(to_raw)
        .collect::<Result<_>>()?;
    let _ = UInt::MIN;
    Ok(response)
}
