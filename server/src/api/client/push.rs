//! Pushers and the notifications list (push rules are in `push_rules`).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Request, State},
    routing::{get, post},
};
use serde_json::{Value, json};

use crate::{
    http::{
        auth::Authenticated,
        error::{Error, Result},
        ruma::{json_body, query_params},
    },
    service::Services,
};

/// Most notifications one page lists.
const MAX_NOTIFICATIONS: i64 = 100;

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_matrix/client/v3/pushers", get(pushers))
        .route("/_matrix/client/r0/pushers", get(pushers))
        .route("/_matrix/client/v3/pushers/set", post(set_pusher))
        .route("/_matrix/client/r0/pushers/set", post(set_pusher))
        .route("/_matrix/client/v3/notifications", get(notifications))
        .route("/_matrix/client/r0/notifications", get(notifications))
}

/// # `GET /_matrix/client/v3/pushers`
async fn pushers(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
) -> Result<Json<Value>> {
    let pushers: Vec<Value> = services
        .store
        .pushers(session.user_id.as_str())
        .await?
        .into_iter()
        .map(|p| {
            json!({
                "app_id": p.app_id, "pushkey": p.pushkey, "kind": p.kind,
                "app_display_name": p.app_display_name,
                "device_display_name": p.device_display_name,
                "profile_tag": p.profile_tag, "lang": p.lang,
                "data": serde_json::from_str::<Value>(&p.data).unwrap_or_default(),
            })
        })
        .collect();
    Ok(Json(json!({ "pushers": pushers })))
}

/// # `POST /_matrix/client/v3/pushers/set`
///
/// `kind: null` deletes the pusher; otherwise it is added or replaced.
async fn set_pusher(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    request: Request,
) -> Result<Json<Value>> {
    let (parts, body) = request.into_parts();
    let body: Value = json_body(&parts, body, services.config.max_request_bytes).await?;
    let append = match body.get("append") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(Error::bad_json("`append` must be a boolean")),
    };
    match body.get("kind") {
        Some(Value::Null) => {
            let field = |key: &str| {
                body.get(key)
                    .and_then(Value::as_str)
                    .ok_or_else(|| Error::missing_param(format!("`{key}` is required")))
            };
            services
                .store
                .delete_pusher(
                    session.user_id.as_str(),
                    field("app_id")?,
                    field("pushkey")?,
                )
                .await?;
        }
        _ => services.set_pusher(&session, &body, append).await?,
    }
    Ok(Json(json!({})))
}

/// # `GET /_matrix/client/v3/notifications`
async fn notifications(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    uri: axum::http::Uri,
) -> Result<Json<Value>> {
    let query = query_params(uri.query());
    let from = match query.get("from") {
        Some(from) => Some(
            from.parse::<i64>()
                .map_err(|_| Error::invalid_param("from is not a token this server gave"))?,
        ),
        None => None,
    };
    let limit = match query.get("limit") {
        Some(limit) => limit
            .parse::<i64>()
            .map_err(|_| Error::invalid_param("limit must be a number"))?
            .clamp(1, MAX_NOTIFICATIONS),
        None => 20,
    };
    let only_highlight = query.get("only").is_some_and(|o| o.contains("highlight"));
    let rows = services
        .store
        .notifications(session.user_id.as_str(), from, limit, only_highlight)
        .await?;
    let ids: Vec<String> = rows.iter().map(|r| r.event_id.clone()).collect();
    let stored = services.store.events(&ids).await?;
    let events = services
        .client_events(
            &stored,
            Some((&session.user_id, session.device_id.as_str())),
            false,
        )
        .await?;
    let by_id: std::collections::HashMap<&str, &Value> = events
        .iter()
        .filter_map(|e| Some((e.get("event_id")?.as_str()?, e)))
        .collect();
    let notifications: Vec<Value> = rows
        .iter()
        .filter_map(|r| {
            let event = by_id.get(r.event_id.as_str())?;
            Some(json!({
                "actions": serde_json::from_str::<Value>(&r.actions).unwrap_or_default(),
                "event": event,
                // Synapse writes it (null: pushers' profile tags are not used here).
                "profile_tag": null,
                "read": r.read,
                "room_id": r.room_id,
                "ts": r.ts,
            }))
        })
        .collect();
    let mut answer = json!({ "notifications": notifications });
    if rows.len() as i64 == limit
        && let Some(last) = rows.last()
    {
        answer["next_token"] = last.stream_ordering.to_string().into();
    }
    Ok(Json(answer))
}
