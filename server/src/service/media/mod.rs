//! The media repository: uploads (direct and asynchronous) stored on disk by SHA-256, so
//! identical files are kept once; downloads; thumbnails; URL previews.

mod preview;
mod remote;
mod thumbnail;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use futures_util::{Stream, StreamExt};
use ruma::UserId;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

pub use preview::{PreviewCache, open_graph, preview_policy};
pub use thumbnail::{Method, ThumbnailSpec, raster_image};

use super::Services;
use crate::{
    http::error::{Error, Result},
    store::MediaRow,
};

/// Length of generated media IDs.
const MEDIA_ID_LEN: usize = 24;
/// How long an asynchronous upload may stay empty.
const PENDING_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Most asynchronous uploads one user may have pending.
const MAX_PENDING_PER_USER: i64 = 10;
/// Longest a download waits for a pending asynchronous upload (`timeout_ms`).
const MAX_WAIT: Duration = Duration::from_secs(120);

/// A file ready to send: where it is and how to describe it.
#[derive(Debug)]
pub struct StoredFile {
    /// Path on disk.
    pub path: PathBuf,
    /// Declared content type.
    pub content_type: Option<String>,
    /// Declared file name.
    pub filename: Option<String>,
    /// Bytes.
    pub size: u64,
}

/// `ab/cd/<sha256>` under the media directory.
fn blob_path(directory: &Path, sha256: &str) -> PathBuf {
    let (a, b) = (
        sha256.get(0..2).unwrap_or("00"),
        sha256.get(2..4).unwrap_or("00"),
    );
    directory.join(a).join(b).join(sha256)
}

fn valid_media_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Services {
    fn media_directory(&self) -> &Path {
        Path::new(&self.config.media.directory)
    }

    /// Writes a stream to the content-addressed store, refusing more than the upload limit
    /// with 413 `M_TOO_LARGE`; `(sha256, size)`.
    pub async fn store_blob<S, E>(&self, mut body: S) -> Result<(String, u64)>
    where
        S: Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let limit = self.config.media.max_upload_bytes;
        let tmp_dir = self.media_directory().join("tmp");
        tokio::fs::create_dir_all(&tmp_dir)
            .await
            .map_err(|e| Error::Internal(anyhow::anyhow!("creating {}: {e}", tmp_dir.display())))?;
        let tmp = tmp_dir.join(super::secrets::random_alphanumeric(24));
        let outcome = async {
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| Error::Internal(anyhow::anyhow!("creating {}: {e}", tmp.display())))?;
            let mut hasher = Sha256::new();
            let mut size: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk =
                    chunk.map_err(|e| Error::bad_request(format!("reading the upload: {e}")))?;
                size += chunk.len() as u64;
                if size > limit as u64 {
                    return Err(Error::too_large(limit));
                }
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| Error::Internal(anyhow::anyhow!("writing an upload: {e}")))?;
            }
            file.flush()
                .await
                .map_err(|e| Error::Internal(anyhow::anyhow!("writing an upload: {e}")))?;
            file.sync_all()
                .await
                .map_err(|e| Error::Internal(anyhow::anyhow!("writing an upload: {e}")))?;
            Ok((hex::encode(hasher.finalize()), size))
        }
        .await;
        let (sha256, size) = match outcome {
            Ok(done) => done,
            Err(error) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(error);
            }
        };
        let target = blob_path(self.media_directory(), &sha256);
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            // Stored before: keep one copy.
            let _ = tokio::fs::remove_file(&tmp).await;
        } else {
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(|e| {
                    Error::Internal(anyhow::anyhow!("creating {}: {e}", parent.display()))
                })?;
            }
            tokio::fs::rename(&tmp, &target).await.map_err(|e| {
                Error::Internal(anyhow::anyhow!("storing {}: {e}", target.display()))
            })?;
        }
        Ok((sha256, size))
    }

    /// Stores in-memory content (a thumbnail, an imported avatar); its SHA-256.
    pub async fn store_bytes(&self, content: Vec<u8>) -> Result<String> {
        let stream = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
            bytes::Bytes::from(content),
        )]);
        Ok(self.store_blob(stream).await?.0)
    }

    /// Records a stored file under a new media ID of `uploader`; its `mxc://` URI.
    async fn new_media(
        &self,
        uploader: &UserId,
        (content_type, filename): (Option<String>, Option<String>),
        (sha256, size): (String, u64),
    ) -> Result<String> {
        let media_id = super::secrets::random_alphanumeric(MEDIA_ID_LEN);
        let row = MediaRow {
            sha256: Some(sha256),
            content_type,
            filename,
            size: i64::try_from(size).unwrap_or(i64::MAX),
            uploader: uploader.to_string(),
            unused_expires_ms: None,
        };
        self.store
            .insert_media(&media_id, &row, self.now_ms())
            .await?;
        Ok(format!("mxc://{}/{media_id}", self.config.server_name))
    }

    /// Stores content the server fetched itself (a preview image, an ENS avatar) as a new
    /// media item of `uploader`; its `mxc://` URI.
    pub async fn store_media_bytes(
        &self,
        uploader: &UserId,
        content_type: &str,
        content: Vec<u8>,
    ) -> Result<String> {
        let size = content.len() as u64;
        let sha256 = self.store_bytes(content).await?;
        self.new_media(
            uploader,
            (Some(content_type.to_owned()), None),
            (sha256, size),
        )
        .await
    }

    /// `POST /media/v3/upload`: stores the body as a new media item; its `mxc://` URI.
    pub async fn upload_media<S, E>(
        &self,
        uploader: &UserId,
        content_type: Option<String>,
        filename: Option<String>,
        body: S,
    ) -> Result<String>
    where
        S: Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let stored = self.store_blob(body).await?;
        self.new_media(uploader, (content_type, filename), stored)
            .await
    }

    /// `POST /media/v1/create`: reserves a media ID to upload to later; the URI and when
    /// the reservation lapses (ms).
    pub async fn create_pending_media(&self, uploader: &UserId) -> Result<(String, i64)> {
        let now = self.now_ms();
        let expires = now + PENDING_LIFETIME.as_millis() as i64;
        let media_id = super::secrets::random_alphanumeric(MEDIA_ID_LEN);
        if !self
            .store
            .reserve_media(
                &media_id,
                uploader.as_str(),
                (now, expires),
                MAX_PENDING_PER_USER,
            )
            .await?
        {
            return Err(Error::limit_exceeded(Duration::from_secs(60)));
        }
        Ok((
            format!("mxc://{}/{media_id}", self.config.server_name),
            expires,
        ))
    }

    /// `PUT /media/v3/upload/{server}/{id}`: fills a reservation, once, by its creator.
    pub async fn upload_pending_media<S, E>(
        &self,
        uploader: &UserId,
        (server, media_id): (&str, &str),
        content_type: Option<String>,
        filename: Option<String>,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if server != self.config.server_name.as_str() {
            return Err(Error::not_found(
                "Media IDs of other servers take no uploads here",
            ));
        }
        let row = self.media_row(server, media_id).await?;
        if row.uploader != uploader.as_str() {
            return Err(Error::forbidden(
                "Only the user who created this media ID may upload to it",
            ));
        }
        if row.sha256.is_some() {
            return Err(cannot_overwrite());
        }
        if row.unused_expires_ms.is_some_and(|t| t <= self.now_ms()) {
            return Err(Error::not_found(
                "This media ID expired before anything was uploaded",
            ));
        }
        let (sha256, size) = self.store_blob(body).await?;
        if !self
            .store
            .complete_media(
                media_id,
                &sha256,
                (content_type.as_deref(), filename.as_deref()),
                i64::try_from(size).unwrap_or(i64::MAX),
                self.now_ms(),
            )
            .await?
        {
            return Err(cannot_overwrite());
        }
        Ok(())
    }

    /// A media item's row: this server's own, or another server's (fetched the first time).
    async fn media_row(&self, server: &str, media_id: &str) -> Result<MediaRow> {
        if server != self.config.server_name.as_str() {
            return self.remote_media_row(server, media_id).await;
        }
        if !valid_media_id(media_id) {
            return Err(Error::not_found("No such media"));
        }
        self.store
            .media(media_id)
            .await?
            .ok_or_else(|| Error::not_found("No such media"))
    }

    /// A media item's file, waiting up to `wait` for a pending asynchronous upload (504
    /// `M_NOT_YET_UPLOADED` after that).
    pub async fn media_file(
        &self,
        server: &str,
        media_id: &str,
        wait: Duration,
    ) -> Result<(MediaRow, StoredFile)> {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        loop {
            let row = self.media_row(server, media_id).await?;
            if let Some(sha256) = &row.sha256 {
                let path = blob_path(self.media_directory(), sha256);
                let file = StoredFile {
                    path,
                    content_type: row.content_type.clone(),
                    filename: row.filename.clone(),
                    size: u64::try_from(row.size).unwrap_or_default(),
                };
                return Ok((row, file));
            }
            if row.unused_expires_ms.is_some_and(|t| t <= self.now_ms()) {
                return Err(Error::not_found("No such media"));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Detailed {
                    status: http::StatusCode::GATEWAY_TIMEOUT,
                    errcode: "M_NOT_YET_UPLOADED",
                    message: "The content of this media ID has not been uploaded yet".into(),
                    extra: serde_json::Map::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The path of a stored blob.
    pub fn blob_file(&self, sha256: &str) -> PathBuf {
        blob_path(self.media_directory(), sha256)
    }
}

fn cannot_overwrite() -> Error {
    Error::Detailed {
        status: http::StatusCode::CONFLICT,
        errcode: "M_CANNOT_OVERWRITE_MEDIA",
        message: "Content was already uploaded to this media ID".into(),
        extra: serde_json::Map::new(),
    }
}
