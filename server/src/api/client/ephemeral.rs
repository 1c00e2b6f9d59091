//! Typing notifications, read receipts and the read marker.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::put,
};
use ruma::{
    api::client::{
        read_marker::set_read_marker,
        receipt::create_receipt::{self, v3::ReceiptType},
    },
    events::receipt::ReceiptThread,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    http::{
        auth::Authenticated,
        error::{Error, Result},
        ruma::{JsonBody, RouterExt, Ruma},
    },
    service::{Services, ephemeral::ReceiptKind},
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = ["r0", "v3"].iter().fold(router, |router, version| {
        router.route(
            &format!("/_matrix/client/{version}/rooms/{{room_id}}/typing/{{user_id}}"),
            put(typing),
        )
    });
    router.ruma(receipt).ruma(read_markers)
}

/// Typing without a `timeout` lasts this long, as on Synapse.
const DEFAULT_TYPING_TIMEOUT: Duration = Duration::from_secs(30);

/// A typing notification; `timeout` may be left out (Synapse takes 30 s).
#[derive(Deserialize)]
struct TypingBody {
    typing: bool,
    timeout: Option<u64>,
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
async fn typing(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    Path((room_id, user_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<TypingBody>,
) -> Result<Json<Value>> {
    let room_id = super::path_room_id(&room_id)?;
    let user_id = super::path_user_id(&user_id)?;
    if user_id != session.user_id {
        return Err(Error::forbidden("You can only say that you are typing"));
    }
    let timeout = body.typing.then(|| {
        body.timeout
            .map_or(DEFAULT_TYPING_TIMEOUT, Duration::from_millis)
    });
    services.set_typing(&room_id, &user_id, timeout).await?;
    Ok(Json(json!({})))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
async fn receipt(
    services: Arc<Services>,
    req: Ruma<create_receipt::v3::Request>,
) -> Result<create_receipt::v3::Response> {
    let b = &req.body;
    let kind = match b.receipt_type {
        ReceiptType::Read => ReceiptKind::Read,
        ReceiptType::ReadPrivate => ReceiptKind::ReadPrivate,
        ReceiptType::FullyRead => ReceiptKind::FullyRead,
        _ => return Err(Error::invalid_param("Unknown receipt type")),
    };
    let thread = match &b.thread {
        ReceiptThread::Unthreaded => None,
        ReceiptThread::Main => Some("main".to_owned()),
        ReceiptThread::Thread(root) => Some(root.to_string()),
        _ => return Err(Error::invalid_param("Unknown thread")),
    };
    services
        .set_receipt(
            &b.room_id,
            &req.auth.user_id,
            kind,
            &b.event_id,
            thread.as_deref(),
        )
        .await?;
    Ok(create_receipt::v3::Response::new())
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
async fn read_markers(
    services: Arc<Services>,
    req: Ruma<set_read_marker::v3::Request>,
) -> Result<set_read_marker::v3::Response> {
    let b = &req.body;
    let user = &req.auth.user_id;
    for (kind, event) in [
        (ReceiptKind::FullyRead, &b.fully_read),
        (ReceiptKind::Read, &b.read_receipt),
        (ReceiptKind::ReadPrivate, &b.private_read_receipt),
    ] {
        if let Some(event_id) = event {
            services
                .set_receipt(&b.room_id, user, kind, event_id, None)
                .await?;
        }
    }
    Ok(set_read_marker::v3::Response::new())
}
