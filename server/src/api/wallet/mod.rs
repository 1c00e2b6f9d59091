//! Matrixon's wallet endpoints under `/_matrix/client/unstable/io.matrixon/`.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{ConnectInfo, State},
    routing::get,
};

use crate::{
    http::error::Result,
    service::{Limit, Services, SiweParameters},
};

/// Every wallet route.
pub fn routes() -> Router<Arc<Services>> {
    Router::new().route(
        "/_matrix/client/unstable/io.matrixon/siwe/nonce",
        get(siwe_nonce),
    )
}

/// # `GET /_matrix/client/unstable/io.matrixon/siwe/nonce`
async fn siwe_nonce(
    State(services): State<Arc<Services>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
) -> Result<Json<SiweParameters>> {
    services.rate_limit(Limit::LoginPerIp, &peer.ip().to_string())?;
    Ok(Json(services.siwe_parameters().await?))
}
