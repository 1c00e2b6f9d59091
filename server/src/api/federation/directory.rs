//! The public room directory for other servers (their users' `/publicRooms?server=`), when
//! `federation.allow_public_rooms` is on.

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::directory::{get_public_rooms, get_public_rooms_filtered};

use crate::{
    api::client::directory::{limit, page},
    http::{
        error::{Error, Result},
        ruma::{RouterExt, Ruma},
    },
    service::Services,
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma::<get_public_rooms::v1::Request, _, _>(public_rooms)
        .ruma::<get_public_rooms_filtered::v1::Request, _, _>(public_rooms_filtered)
}

fn ensure_shared(services: &Services) -> Result<()> {
    if services.config.federation.allow_public_rooms {
        Ok(())
    } else {
        Err(Error::forbidden(
            "This server does not share its room directory with other servers",
        ))
    }
}

/// # `GET /_matrix/federation/v1/publicRooms`
async fn public_rooms(
    services: Arc<Services>,
    req: Ruma<get_public_rooms::v1::Request>,
) -> Result<get_public_rooms::v1::Response> {
    ensure_shared(&services)?;
    let b = &req.body;
    let (chunk, next, prev, total) =
        page(&services, None, b.since.as_deref(), limit(b.limit)).await?;
    let mut response = get_public_rooms::v1::Response::new();
    response.chunk = chunk;
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = total;
    Ok(response)
}

/// # `POST /_matrix/federation/v1/publicRooms`
async fn public_rooms_filtered(
    services: Arc<Services>,
    req: Ruma<get_public_rooms_filtered::v1::Request>,
) -> Result<get_public_rooms_filtered::v1::Response> {
    ensure_shared(&services)?;
    let b = &req.body;
    let term = b.filter.generic_search_term.as_deref();
    let (chunk, next, prev, total) =
        page(&services, term, b.since.as_deref(), limit(b.limit)).await?;
    let mut response = get_public_rooms_filtered::v1::Response::new();
    response.chunk = chunk;
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = total;
    Ok(response)
}
