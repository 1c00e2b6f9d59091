//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`: simplified sliding
//! sync (MSC4186), the only sync Element X speaks.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::sync::sync_events::v5;

use crate::{
    http::{
        error::Result,
        ruma::{RouterExt, Ruma},
    },
    service::Services,
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(sliding_sync)
}

/// # `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`
async fn sliding_sync(services: Arc<Services>, req: Ruma<v5::Request>) -> Result<v5::Response> {
    let Ruma { auth, body, .. } = req;
    // Boxed: the wait happens in here, and this future is kept for as long as it lasts.
    Box::pin(services.sliding_sync(&auth.user_id, auth.device_id.as_str(), body)).await
}
