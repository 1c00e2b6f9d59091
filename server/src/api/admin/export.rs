//! `GET /_matrix/client/unstable/io.matrixon/admin/users/{userId}/export`: a user's data for
//! a data-protection request, streamed as JSON Lines (`matrixon export-user` writes the same).

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
};
use ruma::UserId;

use crate::{
    http::{
        auth::Authenticated,
        error::{Error, Result},
    },
    service::Services,
};

/// # `GET /_matrix/client/unstable/io.matrixon/admin/users/{userId}/export`
pub async fn export_user(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    Path(user_id): Path<String>,
) -> Result<Response> {
    if !session.is_admin {
        return Err(Error::forbidden("You are not a server admin"));
    }
    let user_id = UserId::parse(user_id.as_str())
        .map_err(|_| Error::invalid_param(format!("{user_id} is not a user ID")))?;
    if user_id.server_name() != services.config.server_name
        || services.store.user(&user_id).await?.is_none()
    {
        return Err(Error::not_found(format!(
            "No user {user_id} on this server"
        )));
    }
    tracing::info!(admin = %session.user_id, %user_id, "user data exported");
    // Written into a pipe as it is read, so the events never sit in memory together; an
    // export that stops part-way lacks its closing `end` line.
    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        if let Err(e) = services.export_user(&user_id, &mut writer).await {
            tracing::warn!(%user_id, error = %e, "a user export stopped part-way");
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/jsonl"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"matrixon-export.jsonl\"",
            ),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(reader)),
    )
        .into_response())
}
