//! Reporting content to the server's administrators: events (r0), rooms (v1.13) and users
//! (v1.14). Administrators read event reports at Synapse's `/_synapse/admin/v1/event_reports`.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::{
    reporting::report_user,
    room::{report_content, report_room},
};

use crate::{
    http::{
        error::Result,
        ruma::{RouterExt, Ruma},
    },
    service::Services,
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(report_event)
        .ruma(report_a_room)
        .ruma(report_a_user)
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}`
async fn report_event(
    services: Arc<Services>,
    req: Ruma<report_content::v3::Request>,
) -> Result<report_content::v3::Response> {
    let b = &req.body;
    services
        .report_event(
            &req.auth.user_id,
            &b.room_id,
            &b.event_id,
            b.reason.as_deref(),
        )
        .await?;
    Ok(report_content::v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/report`
async fn report_a_room(
    services: Arc<Services>,
    req: Ruma<report_room::v3::Request>,
) -> Result<report_room::v3::Response> {
    services
        .report_room(&req.auth.user_id, &req.body.room_id, &req.body.reason)
        .await?;
    Ok(report_room::v3::Response::new())
}

/// # `POST /_matrix/client/v3/users/{userId}/report`
async fn report_a_user(
    services: Arc<Services>,
    req: Ruma<report_user::v3::Request>,
) -> Result<report_user::v3::Response> {
    services
        .report_user(&req.auth.user_id, &req.body.user_id, &req.body.reason)
        .await?;
    Ok(report_user::v3::Response::new())
}
