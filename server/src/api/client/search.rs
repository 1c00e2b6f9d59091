//! Room tags and message search.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::{
    search::search_events::{
        self,
        v3::{ResultCategories, ResultRoomEvents, SearchResult},
    },
    tag::{create_tag, delete_tag, get_tags},
};

use super::ensure_self;
use crate::{
    http::{
        error::{Error, Result},
        ruma::{RouterExt, Ruma, to_raw},
    },
    service::Services,
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(tags)
        .ruma(add_tag)
        .ruma(remove_tag)
        .ruma(search)
}

/// # `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags`
async fn tags(
    services: Arc<Services>,
    req: Ruma<get_tags::v3::Request>,
) -> Result<get_tags::v3::Response> {
    ensure_self(&req.auth.user_id, &req.body.user_id)?;
    let tags = services
        .room_tags(&req.auth.user_id, &req.body.room_id)
        .await?;
    let tags = serde_json::from_value(tags).map_err(|e| Error::Internal(e.into()))?;
    Ok(get_tags::v3::Response::new(tags))
}

/// # `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
async fn add_tag(
    services: Arc<Services>,
    req: Ruma<create_tag::v3::Request>,
) -> Result<create_tag::v3::Response> {
    let b = &req.body;
    ensure_self(&req.auth.user_id, &b.user_id)?;
    let info = serde_json::to_value(&b.tag_info).map_err(|e| Error::Internal(e.into()))?;
    services
        .set_room_tag(&b.user_id, &b.room_id, &b.tag, Some(info))
        .await?;
    Ok(create_tag::v3::Response::new())
}

/// # `DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
async fn remove_tag(
    services: Arc<Services>,
    req: Ruma<delete_tag::v3::Request>,
) -> Result<delete_tag::v3::Response> {
    let b = &req.body;
    ensure_self(&req.auth.user_id, &b.user_id)?;
    services
        .set_room_tag(&b.user_id, &b.room_id, &b.tag, None)
        .await?;
    Ok(delete_tag::v3::Response::new())
}

/// # `POST /_matrix/client/v3/search`
async fn search(
    services: Arc<Services>,
    req: Ruma<search_events::v3::Request>,
) -> Result<search_events::v3::Response> {
    let b = &req.body;
    let Some(criteria) = &b.search_categories.room_events else {
        return Ok(search_events::v3::Response::new(ResultCategories::new()));
    };
    let limit = criteria
        .filter
        .limit
        .map_or(10, |l| usize::try_from(u64::from(l)).unwrap_or(10))
        .clamp(1, 100);
    let page = services
        .search_messages(
            &req.auth.user_id,
            req.auth.device_id.as_str(),
            &criteria.search_term,
            criteria.filter.rooms.as_deref(),
            b.next_batch.as_deref(),
            limit,
        )
        .await?;
    let mut events = ResultRoomEvents::new();
    events.count = ruma::UInt::new(page.count as u64);
    events.next_batch = page.next_batch;
    events.highlights = vec![criteria.search_term.clone()];
    for result in &page.results {
        let mut entry = SearchResult::new();
        entry.rank = Some(1.0);
        entry.result = Some(to_raw(result)?);
        events.results.push(entry);
    }
    let mut categories = ResultCategories::new();
    categories.room_events = events;
    Ok(search_events::v3::Response::new(categories))
}
