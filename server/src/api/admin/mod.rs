//! Synapse-compatible admin endpoints that existing tooling relies on.

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
}
