//! This server's media for other servers (authenticated media, Matrix 1.11): the file or
//! a thumbnail of it, as `multipart/mixed` with empty metadata. Only media uploaded here is
//! served: what this server fetched from others is theirs to serve.

use std::{sync::Arc, time::Duration};

use axum::Router;
use ruma::{
    api::federation::authenticated_media::{
        Content, ContentMetadata, FileOrLocation, get_content, get_content_thumbnail,
    },
    http_headers::{ContentDisposition, ContentDispositionType},
};

use crate::{
    http::{
        error::{Error, Result},
        ruma::{RouterExt, Ruma},
    },
    service::{
        Services,
        media::{Method, StoredFile, ThumbnailSpec},
    },
};

/// Longest wait for a pending asynchronous upload.
const MAX_WAIT: Duration = Duration::from_secs(20);

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma::<get_content::v1::Request, _, _>(download)
        .ruma::<get_content_thumbnail::v1::Request, _, _>(thumbnail)
}

/// The file's bytes as one part of the answer.
async fn content(file: StoredFile) -> Result<FileOrLocation> {
    let bytes = tokio::fs::read(&file.path)
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!("reading {}: {e}", file.path.display())))?;
    let disposition =
        ContentDisposition::new(ContentDispositionType::Inline).with_filename(file.filename);
    let content_type = file
        .content_type
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    Ok(FileOrLocation::File(Content::new(
        bytes,
        content_type,
        disposition,
    )))
}

/// # `GET /_matrix/federation/v1/media/download/{mediaId}`
async fn download(
    services: Arc<Services>,
    req: Ruma<get_content::v1::Request>,
) -> Result<get_content::v1::Response> {
    let own = services.config.server_name.as_str();
    let wait = req.body.timeout_ms.min(MAX_WAIT);
    let (_, file) = services.media_file(own, &req.body.media_id, wait).await?;
    Ok(get_content::v1::Response::new(
        ContentMetadata::new(),
        content(file).await?,
    ))
}

/// # `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
async fn thumbnail(
    services: Arc<Services>,
    req: Ruma<get_content_thumbnail::v1::Request>,
) -> Result<get_content_thumbnail::v1::Response> {
    let b = &req.body;
    let own = services.config.server_name.as_str();
    let side = |v: ruma::UInt| u32::try_from(u64::from(v)).unwrap_or(u32::MAX);
    let spec = ThumbnailSpec {
        width: side(b.width),
        height: side(b.height),
        method: match b.method.as_ref().map(|m| m.as_str()) {
            Some("crop") => Method::Crop,
            _ => Method::Scale,
        },
    };
    let file = services
        .media_thumbnail((own, &b.media_id), spec, b.timeout_ms.min(MAX_WAIT))
        .await?;
    Ok(get_content_thumbnail::v1::Response::new(
        ContentMetadata::new(),
        content(file).await?,
    ))
}
