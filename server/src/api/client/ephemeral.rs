//! Typing notifications, read receipts and the read marker.

use std::sync::Arc;

use axum::Router;
use ruma::{
    api::client::{
        read_marker::set_read_marker,
        receipt::create_receipt::{self, v3::ReceiptType},
        typing::create_typing_event::{self, v3::Typing},
    },
    events::receipt::ReceiptThread,
};

use crate::{
    http::{
        error::{Error, Result},
        ruma::{RouterExt, Ruma},
    },
    service::{Services, ephemeral::ReceiptKind},
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(typing).ruma(receipt).ruma(read_markers)
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
async fn typing(
    services: Arc<Services>,
    req: Ruma<create_typing_event::v3::Request>,
) -> Result<create_typing_event::v3::Response> {
    let b = &req.body;
    if b.user_id != req.auth.user_id {
        return Err(Error::forbidden("You can only say that you are typing"));
    }
    let timeout = match &b.state {
        Typing::Yes(info) => Some(info.timeout),
        _ => None,
    };
    services.set_typing(&b.room_id, &b.user_id, timeout).await?;
    Ok(create_typing_event::v3::Response::new())
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
