//! The Server-Server API: what other servers ask of this one. Mounted only when
//! `federation.enabled` is set.

mod directory;
mod keys;
mod media;
mod query;
mod rooms;
mod spaces;

use std::sync::Arc;

use axum::Router;

use crate::service::Services;

/// Every federation and key route.
pub fn routes() -> Router<Arc<Services>> {
    let router = Router::new();
    let router = keys::routes(router);
    let router = rooms::routes(router);
    let router = media::routes(router);
    let router = directory::routes(router);
    let router = spaces::routes(router);
    query::routes(router)
}
