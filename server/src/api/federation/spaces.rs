//! Spaces for other servers walking them.

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::space::get_hierarchy;

use crate::{
    http::{
        error::Result,
        ruma::{RouterExt, Ruma},
    },
    service::Services,
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma::<get_hierarchy::v1::Request, _, _>(hierarchy)
}

/// # `GET /_matrix/federation/v1/hierarchy/{roomId}`
async fn hierarchy(
    services: Arc<Services>,
    req: Ruma<get_hierarchy::v1::Request>,
) -> Result<get_hierarchy::v1::Response> {
    let (room, children, inaccessible) = services
        .hierarchy_for_server(&req.auth, &req.body.room_id, req.body.suggested_only)
        .await?;
    let mut response = get_hierarchy::v1::Response::new(room);
    response.children = children;
    response.inaccessible_children = inaccessible;
    Ok(response)
}
