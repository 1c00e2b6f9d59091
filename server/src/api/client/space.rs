//! Spaces: `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::space::get_hierarchy;

use crate::{
    http::{
        error::Result,
        ruma::{RouterExt, Ruma},
    },
    service::{Services, rooms::hierarchy::HierarchyRequest},
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(hierarchy)
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`
async fn hierarchy(
    services: Arc<Services>,
    req: Ruma<get_hierarchy::v1::Request>,
) -> Result<get_hierarchy::v1::Response> {
    let b = &req.body;
    let number =
        |n: Option<ruma::UInt>| n.map(|n| usize::try_from(u64::from(n)).unwrap_or(usize::MAX));
    let (rooms, next_batch) = services
        .space_hierarchy(
            &req.auth.user_id,
            &b.room_id,
            &HierarchyRequest {
                from: b.from.as_deref(),
                limit: number(b.limit),
                max_depth: number(b.max_depth),
                suggested_only: b.suggested_only,
            },
        )
        .await?;
    let mut response = get_hierarchy::v1::Response::new();
    response.rooms = rooms;
    response.next_batch = next_batch;
    Ok(response)
}
