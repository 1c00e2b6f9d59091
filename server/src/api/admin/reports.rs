//! `GET /_synapse/admin/v1/event_reports`: the event reports, in Synapse's shape, so that
//! admin UIs (synapse-admin) and scripts that read them work here.

use std::sync::Arc;

use axum::{Json, extract::State, http::Uri};
use ruma::RoomId;
use serde_json::{Value, json};

use crate::{
    http::{
        auth::Authenticated,
        error::{Error, Result},
        ruma::query_params,
    },
    service::Services,
};

/// # `GET /_synapse/admin/v1/event_reports?from=…&limit=…` (newest first)
pub async fn event_reports(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    uri: Uri,
) -> Result<Json<Value>> {
    if !session.is_admin {
        return Err(Error::forbidden("You are not a server admin"));
    }
    let query = query_params(uri.query());
    let number = |key: &str, default: i64| {
        query.get(key).map_or(Ok(default), |v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| Error::invalid_param(format!("{key} must be a number ≥ 0")))
        })
    };
    let from = number("from", 0)?;
    let limit = number("limit", 100)?;
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid_param("limit must be between 1 and 1000"));
    }
    let (reports, total) = services.store.event_reports(from, limit).await?;
    let mut out = Vec::with_capacity(reports.len());
    for report in &reports {
        let room = report
            .room_id
            .as_deref()
            .and_then(|r| RoomId::parse(r).ok());
        let name = match &room {
            Some(room) => services.state_content(room, "m.room.name", "").await?,
            None => None,
        };
        let alias = match &room {
            Some(room) => {
                services
                    .state_content(room, "m.room.canonical_alias", "")
                    .await?
            }
            None => None,
        };
        let sender = match &report.event_id {
            Some(id) => services
                .store
                .events(std::slice::from_ref(id))
                .await?
                .first()
                .map(|e| e.sender.clone()),
            None => None,
        };
        out.push(json!({
            "id": report.id,
            "received_ts": report.received_ms,
            "room_id": report.room_id,
            "event_id": report.event_id,
            "user_id": report.reporter,
            "reason": report.reason,
            "score": null,
            "sender": sender,
            "name": name.as_ref().and_then(|n| n.get("name")),
            "canonical_alias": alias.as_ref().and_then(|a| a.get("alias")),
        }));
    }
    let mut body = json!({ "event_reports": out, "total": total });
    let reached = from.saturating_add(i64::try_from(reports.len()).unwrap_or(0));
    if reached < total {
        body["next_token"] = json!(reached);
    }
    Ok(Json(body))
}
