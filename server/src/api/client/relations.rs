//! `/relations` and `/threads`.

use std::sync::Arc;

use axum::Router;
use ruma::{
    UInt,
    api::{
        Direction,
        client::{
            relations::{
                get_relating_events, get_relating_events_with_rel_type,
                get_relating_events_with_rel_type_and_event_type,
            },
            threads::get_threads::{self, v1::IncludeThreads},
        },
    },
};

use super::membership::to_raw;
use crate::{
    http::{
        error::Result,
        ruma::{RouterExt, Ruma},
    },
    service::{Services, rooms::RelationsPage},
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(relations)
        .ruma(relations_of_type)
        .ruma(relations_of_type_and_event)
        .ruma(threads)
}

fn page_size(limit: Option<UInt>) -> usize {
    limit
        .map_or(50, |l| usize::try_from(u64::from(l)).unwrap_or(50))
        .clamp(1, 1000)
}

macro_rules! relations_response {
    ($module:ident, $page:expr) => {{
        let page: RelationsPage = $page;
        let mut response =
            $module::v1::Response::new(page.chunk.iter().map(to_raw).collect::<Result<_>>()?);
        response.next_batch = page.next_batch;
        Ok(response)
    }};
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}`
async fn relations(
    services: Arc<Services>,
    req: Ruma<get_relating_events::v1::Request>,
) -> Result<get_relating_events::v1::Response> {
    let b = &req.body;
    relations_response!(
        get_relating_events,
        services
            .relations_page(
                &b.room_id,
                &req.auth.user_id,
                req.auth.device_id.as_str(),
                &b.event_id,
                None,
                None,
                b.from.as_deref(),
                b.dir == Direction::Forward,
                page_size(b.limit),
            )
            .await?
    )
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}`
async fn relations_of_type(
    services: Arc<Services>,
    req: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type::v1::Response> {
    let b = &req.body;
    relations_response!(
        get_relating_events_with_rel_type,
        services
            .relations_page(
                &b.room_id,
                &req.auth.user_id,
                req.auth.device_id.as_str(),
                &b.event_id,
                Some(b.rel_type.as_str()),
                None,
                b.from.as_deref(),
                b.dir == Direction::Forward,
                page_size(b.limit),
            )
            .await?
    )
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}`
async fn relations_of_type_and_event(
    services: Arc<Services>,
    req: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type_and_event_type::v1::Response> {
    let b = &req.body;
    let event_type = b.event_type.to_string();
    relations_response!(
        get_relating_events_with_rel_type_and_event_type,
        services
            .relations_page(
                &b.room_id,
                &req.auth.user_id,
                req.auth.device_id.as_str(),
                &b.event_id,
                Some(b.rel_type.as_str()),
                Some(&event_type),
                b.from.as_deref(),
                b.dir == Direction::Forward,
                page_size(b.limit),
            )
            .await?
    )
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/threads`
async fn threads(
    services: Arc<Services>,
    req: Ruma<get_threads::v1::Request>,
) -> Result<get_threads::v1::Response> {
    let b = &req.body;
    let page = services
        .threads(
            &b.room_id,
            &req.auth.user_id,
            req.auth.device_id.as_str(),
            b.include == IncludeThreads::Participated,
            b.from.as_deref(),
            page_size(b.limit),
        )
        .await?;
    let mut response =
        get_threads::v1::Response::new(page.chunk.iter().map(to_raw).collect::<Result<_>>()?);
    response.next_batch = page.next_batch;
    Ok(response)
}
