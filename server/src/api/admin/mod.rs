//! Synapse-compatible admin endpoints that existing tooling relies on, and the user export.

mod export;
mod register;
mod reports;

use std::sync::Arc;

use axum::{Router, routing::get};

use crate::service::Services;

/// Every admin route.
pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route(
            "/_synapse/admin/v1/register",
            get(register::nonce).post(register::register),
        )
        .route(
            "/_synapse/admin/v1/event_reports",
            get(reports::event_reports),
        )
        .route(
            "/_matrix/client/unstable/io.matrixon/admin/users/{user_id}/export",
            get(export::export_user),
        )
}
