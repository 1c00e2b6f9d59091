//! Media of other servers: fetched over federation the first time a client asks (the
//! authenticated `/_matrix/federation/v1/media/download`, or the legacy unauthenticated
//! download for servers that lack it), kept like local media under a key of its own, and
//! served (and thumbnailed) from here afterwards.

use std::time::Duration;

use ruma::{
    ServerName,
    api::{IncomingResponse, federation::authenticated_media::FileOrLocation},
};

use super::valid_media_id;
use crate::{
    http::error::{Error, Result},
    service::{Services, federation::FederationError},
    store::MediaRow,
};

/// Longest wait for another server's media.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The key a remote media item is kept under: never a local media id (those have no `/`).
pub(crate) fn remote_key(origin: &str, media_id: &str) -> String {
    format!("{origin}/{media_id}")
}

/// Whether another server's file name is one to keep: short, and no path.
fn usable_filename(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && !name.contains(['/', '\\']) && !name.contains("..")
}

/// The file name in a `Content-Disposition` value (`filename="…"` or `filename=…`).
fn disposition_filename(value: &str) -> Option<String> {
    value.split(';').find_map(|part| {
        let (key, name) = part.trim().split_once('=')?;
        (key.trim().eq_ignore_ascii_case("filename"))
            .then(|| name.trim().trim_matches('"').to_owned())
            .filter(|n| usable_filename(n))
    })
}

impl Services {
    /// The row of `origin`'s media item, fetching and keeping it the first time.
    pub(super) async fn remote_media_row(&self, origin: &str, media_id: &str) -> Result<MediaRow> {
        if !valid_media_id(media_id) {
            return Err(Error::not_found("No such media"));
        }
        let key = remote_key(origin, media_id);
        if let Some(row) = self.store.media(&key).await? {
            return Ok(row);
        }
        if !self.config.federation.enabled {
            return Err(Error::not_found(
                "Media of other servers is not available: federation is off here",
            ));
        }
        let server = <&ServerName>::try_from(origin)
            .map_err(|_| Error::not_found("No such media: the server name is not valid"))?;
        let (content, content_type, filename) = self.fetch_remote_media(server, media_id).await?;
        let size = content.len() as u64;
        let sha256 = self.store_bytes(content).await?;
        let row = MediaRow {
            sha256: Some(sha256),
            content_type,
            filename,
            size: i64::try_from(size).unwrap_or(i64::MAX),
            uploader: origin.to_owned(),
            unused_expires_ms: None,
        };
        // Two requests may have fetched it at once: the first row stays.
        self.store
            .insert_media_if_absent(&key, &row, self.now_ms())
            .await?;
        Ok(self.store.media(&key).await?.unwrap_or(row))
    }

    /// The content, content type and file name of `server`'s media item.
    async fn fetch_remote_media(
        &self,
        server: &ServerName,
        media_id: &str,
    ) -> Result<(Vec<u8>, Option<String>, Option<String>)> {
        let max = self.config.media.max_upload_bytes;
        let path = format!("/_matrix/federation/v1/media/download/{media_id}");
        let request = http::Request::get(path.as_str())
            .body(Vec::new())
            .map_err(|e| Error::Internal(e.into()))?;
        let answer = tokio::time::timeout(
            TIMEOUT,
            self.federation_response(server, request, true, max.saturating_add(64 * 1024)),
        )
        .await
        .map_err(|_| unreachable(server, "it did not answer in time"))?;
        let response = match answer {
            Ok(response) => response,
            // A server from before authenticated media: its legacy download.
            Err(FederationError::Remote { status, body, .. })
                if status == http::StatusCode::NOT_FOUND && body.contains("M_UNRECOGNIZED") =>
            {
                return self.fetch_legacy_media(server, media_id, max).await;
            }
            Err(FederationError::Remote { status, .. })
                if status == http::StatusCode::NOT_FOUND =>
            {
                return Err(Error::not_found("No such media"));
            }
            Err(e) => return Err(e.into()),
        };
        let parsed =
            ruma::api::federation::authenticated_media::get_content::v1::Response::try_from_http_response(
                response,
            )
            .map_err(|e| unreachable(server, format!("its answer is not media: {e}")))?;
        match parsed.content {
            FileOrLocation::File(content) => Ok((
                content.file,
                content.content_type,
                content
                    .content_disposition
                    .and_then(|d| d.filename)
                    .filter(|n| usable_filename(n)),
            )),
            FileOrLocation::Location(url) => self.fetch_located_media(server, &url, max).await,
            _ => Err(unreachable(
                server,
                "its answer holds neither a file nor a location",
            )),
        }
    }

    /// A file another server said lives at `url` (its CDN), under the same address rules.
    async fn fetch_located_media(
        &self,
        server: &ServerName,
        url: &str,
        max: usize,
    ) -> Result<(Vec<u8>, Option<String>, Option<String>)> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| unreachable(server, "it named a location that is not a URL"))?;
        let (Some("https"), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return Err(unreachable(server, "it named a location that is not https"));
        };
        let port = uri.port_u16().unwrap_or(443);
        let body = self
            .federation
            .https_get(url, host, port, TIMEOUT, max)
            .await
            .map_err(|why| unreachable(server, why))?;
        Ok((body, None, None))
    }

    /// The legacy unauthenticated download (`allow_remote=false`: the origin only).
    async fn fetch_legacy_media(
        &self,
        server: &ServerName,
        media_id: &str,
        max: usize,
    ) -> Result<(Vec<u8>, Option<String>, Option<String>)> {
        let path = format!("/_matrix/media/v3/download/{server}/{media_id}?allow_remote=false");
        let request = http::Request::get(path.as_str())
            .body(Vec::new())
            .map_err(|e| Error::Internal(e.into()))?;
        let response = tokio::time::timeout(
            TIMEOUT,
            self.federation_response(server, request, false, max),
        )
        .await
        .map_err(|_| unreachable(server, "it did not answer in time"))?
        .map_err(|e| match e {
            FederationError::Remote { status, .. } if status == http::StatusCode::NOT_FOUND => {
                Error::not_found("No such media")
            }
            other => other.into(),
        })?;
        let header = |name: http::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(http::header::CONTENT_TYPE);
        let filename = header(http::header::CONTENT_DISPOSITION)
            .as_deref()
            .and_then(disposition_filename);
        Ok((response.into_body(), content_type, filename))
    }
}

/// 502: another server's media could not be had.
fn unreachable(server: &ServerName, why: impl std::fmt::Display) -> Error {
    Error::new(
        http::StatusCode::BAD_GATEWAY,
        ruma::api::error::ErrorKind::Unknown,
        format!("{server}'s media could not be fetched: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_come_from_the_disposition_alone() {
        assert_eq!(
            disposition_filename("inline; filename=\"cat.png\"").as_deref(),
            Some("cat.png")
        );
        assert_eq!(
            disposition_filename("attachment; filename=notes.txt").as_deref(),
            Some("notes.txt")
        );
        assert_eq!(disposition_filename("inline"), None);
        assert_eq!(
            disposition_filename("inline; filename=\"../../etc/passwd\""),
            None
        );
        assert!(remote_key("other.example", "abc").contains('/'));
    }
}
