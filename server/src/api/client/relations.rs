//! `/relations` and `/threads`.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
};
use ruma::{
    UInt,
    api::{
        Direction,
        client::relations::{
            get_relating_events, get_relating_events_with_rel_type,
            get_relating_events_with_rel_type_and_event_type,
        },
    },
};

use serde_json::{Value, json};

use crate::{
    http::{
        auth::Authenticated,
        error::{Error, Result},
        ruma::{RouterExt, Ruma, query_params, to_raw},
    },
    service::{Services, rooms::RelationsPage},
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(relations)
        .ruma(relations_of_type)
        .ruma(relations_of_type_and_event)
        .route(
            "/_matrix/client/v1/rooms/{room_id}/threads",
            axum::routing::get(threads),
        )
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
///
/// A plain handler: ruma's request type requires `include`, which the spec makes optional.
async fn threads(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    Path(room_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
    let room_id = super::path_room_id(&room_id)?;
    let params = query_params(query.as_deref());
    let participated = match params.get("include").map(String::as_str) {
        None | Some("all") => false,
        Some("participated") => true,
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "include must be all or participated, not {other}"
            )));
        }
    };
    let limit = match params.get("limit") {
        Some(limit) => Some(
            limit
                .parse::<UInt>()
                .map_err(|_| Error::invalid_param("limit must be a number"))?,
        ),
        None => None,
    };
    let page = services
        .threads(
            &room_id,
            &session.user_id,
            session.device_id.as_str(),
            participated,
            params.get("from").map(String::as_str),
            page_size(limit),
        )
        .await?;
    let mut body = json!({ "chunk": page.chunk });
    if let Some(next) = page.next_batch {
        body["next_batch"] = Value::from(next);
    }
    Ok(Json(body))
}
