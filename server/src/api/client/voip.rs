//! `GET /voip/turnServer`: TURN credentials for calls.

use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Value, json};

use crate::{
    http::{auth::Authenticated, error::Result},
    service::Services,
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_matrix/client/v3/voip/turnServer", get(turn_server))
        .route("/_matrix/client/r0/voip/turnServer", get(turn_server))
}

/// # `GET /_matrix/client/v3/voip/turnServer`
///
/// An empty object when no TURN server is configured, as the spec allows.
async fn turn_server(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
) -> Result<Json<Value>> {
    let now_s = services.now_ms().div_euclid(1000);
    Ok(Json(
        services
            .turn_credentials(&session.user_id, now_s)
            .map_or_else(|| json!({}), |c| json!(c)),
    ))
}
