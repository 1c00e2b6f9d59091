//! The Client-Server API, one module per section of the spec.

mod account;
mod device;
mod discovery;
mod session;

use std::sync::Arc;

use axum::Router;

use crate::service::Services;

/// Every Client-Server route.
pub fn routes() -> Router<Arc<Services>> {
    let router = Router::new();
    let router = discovery::routes(router);
    let router = session::routes(router);
    let router = account::routes(router);
    device::routes(router)
}
