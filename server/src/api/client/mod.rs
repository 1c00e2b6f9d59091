//! The Client-Server API, one module per section of the spec.

mod account;
mod device;
mod directory;
mod discovery;
mod ephemeral;
mod membership;
mod message;
mod profile;
mod relations;
mod rooms;
mod search;
mod session;
mod sync;

use std::sync::Arc;

use axum::Router;

use crate::service::Services;

/// Every Client-Server route.
pub fn routes() -> Router<Arc<Services>> {
    let router = Router::new();
    let router = discovery::routes(router);
    let router = session::routes(router);
    let router = account::routes(router);
    let router = membership::routes(router);
    let router = message::routes(router);
    let router = rooms::routes(router);
    let router = sync::routes(router);
    let router = profile::routes(router);
    let router = ephemeral::routes(router);
    let router = relations::routes(router);
    let router = directory::routes(router);
    let router = search::routes(router);
    device::routes(router)
}
