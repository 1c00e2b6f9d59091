//! HTTP plumbing: router assembly, extractors, errors, metrics.

pub mod auth;
pub mod error;
pub mod guests;
pub mod metrics;
pub mod ruma;

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    middleware,
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderName, Method, StatusCode, header};
use tower_http::{catch_panic::CatchPanicLayer, cors::CorsLayer};

use self::error::Error;
use crate::{api, service::Services};

/// The whole client-facing application.
pub fn router(services: Arc<Services>) -> Router {
    let federation = if services.config.federation.enabled {
        api::federation::routes()
    } else {
        Router::new()
    };
    Router::new()
        .merge(api::client::routes())
        .merge(federation)
        .merge(api::admin::routes())
        .merge(api::wallet::routes())
        .merge(api::sso::routes())
        .merge(api::oauth::routes())
        .merge(api::media::routes())
        .route("/health", get(health))
        .fallback(|| async { Error::unrecognized() })
        .method_not_allowed_fallback(|| async { Error::method_not_allowed() })
        .layer(middleware::from_fn_with_state(
            services.clone(),
            metrics::track,
        ))
        .layer(cors())
        .layer(CatchPanicLayer::custom(|_| {
            Error::Internal(anyhow::anyhow!("a request handler panicked")).into_response()
        }))
        .with_state(services)
}

/// The headers the spec asks every Client-Server response to carry for browser clients.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            HeaderName::from_static("x-requested-with"),
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            // MSC4108 rendezvous writes and polls are conditional.
            header::IF_MATCH,
            header::IF_NONE_MATCH,
        ])
        .expose_headers([header::ETAG])
}

/// # `GET /health`
async fn health(State(services): State<Arc<Services>>) -> Response {
    if services.store.ping().await {
        (StatusCode::OK, "OK").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
    }
}

/// The metrics listener's router.
pub fn metrics_router(services: Arc<Services>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(services): State<Arc<Services>>| async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    services
                        .metrics
                        .render(services.store.pool_usage(), &services.chains),
                )
            }),
        )
        .with_state(services)
}
