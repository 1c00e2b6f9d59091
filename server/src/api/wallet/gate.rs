//! Gate endpoints: the dry-run check for room admins and dApps, payments submitted by their
//! payers, and the audit log for server administrators.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Request, State},
    http::Uri,
};
use ruma::RoomId;
use serde_json::Value;

use crate::{
    http::{
        auth::Authenticated,
        error::{Error, Result},
        ruma::{json_body, query_params},
    },
    service::{
        Limit, Services,
        gate::{CheckRequest, PayRequest},
    },
};

/// # `POST /_matrix/client/unstable/io.matrixon/gate/check`
pub async fn check(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    request: Request,
) -> Result<Json<Value>> {
    services.rate_limit(Limit::LookupsPerUser, session.user_id.as_str())?;
    let (parts, body) = request.into_parts();
    let body: CheckRequest = json_body(&parts, body, services.config.max_request_bytes).await?;
    Ok(Json(services.gate_check(&session.user_id, body).await?))
}

/// # `POST /_matrix/client/unstable/io.matrixon/gate/pay`
///
/// A payment's transaction submitted by its payer, for a room whose gate or roles have a
/// `paid` leaf.
pub async fn pay(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    request: Request,
) -> Result<Json<Value>> {
    services.rate_limit(Limit::LookupsPerUser, session.user_id.as_str())?;
    let (parts, body) = request.into_parts();
    let body: PayRequest = json_body(&parts, body, services.config.max_request_bytes).await?;
    Ok(Json(services.gate_pay(&session.user_id, body).await?))
}

/// # `GET /_matrix/client/unstable/io.matrixon/admin/gate/audit`
///
/// Query: `room_id` (optional), `from` (an entry id: older entries only), `limit` (1–1000).
pub async fn audit(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    uri: Uri,
) -> Result<Json<Value>> {
    if !session.is_admin {
        return Err(Error::forbidden(
            "Only server administrators may read the gate audit log",
        ));
    }
    let query = query_params(uri.query());
    let number = |key: &str| {
        query
            .get(key)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| Error::invalid_param(format!("{key} must be an integer")))
            })
            .transpose()
    };
    let room_id = query
        .get("room_id")
        .map(|r| RoomId::parse(r).map_err(|_| Error::invalid_param("room_id is not a room ID")))
        .transpose()?;
    let limit = number("limit")?.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid_param("limit must be between 1 and 1000"));
    }
    Ok(Json(
        services
            .gate_audit_log(room_id.as_deref(), number("from")?, limit)
            .await?,
    ))
}
