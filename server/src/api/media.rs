//! The media repository's HTTP side: uploads (direct and asynchronous), authenticated
//! downloads and thumbnails (spec v1.11), the legacy unauthenticated endpoints (frozen unless
//! configured), the upload limit and URL previews. Downloads are served so that a browser
//! opening one runs nothing: a sandboxing CSP, `nosniff`, and `attachment` for every type
//! that is not plainly inert.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Body,
    extract::FromRequestParts,
    extract::{Path, Request, State},
    http::{HeaderMap, HeaderValue, Uri, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde_json::{Value, json};

use super::sso::LOGO_SVG;
use crate::{
    http::{
        auth::Authenticated,
        error::{Error, Result},
        ruma::query_params,
    },
    service::{
        Services,
        media::{Method, StoredFile, ThumbnailSpec},
    },
};

/// The media id of the Ethereum logo, `mxc://<server_name>/<id>`.
pub const LOGO_MEDIA_ID: &str = "matrixon-ethereum-logo";

/// Longest `timeout_ms` a download may ask for.
const DEFAULT_WAIT: Duration = Duration::from_secs(20);

/// Types a browser shows without running anything: served `inline`, all else `attachment`.
const INLINE_TYPES: &[&str] = &[
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Upload, download, thumbnail, config and preview routes.
pub fn routes() -> Router<Arc<Services>> {
    let mut router = Router::new()
        .route("/_matrix/client/v1/media/config", get(config))
        .route("/_matrix/client/v1/media/preview_url", get(preview))
        .route(
            "/_matrix/client/v1/media/download/{server}/{id}",
            get(download),
        )
        .route(
            "/_matrix/client/v1/media/download/{server}/{id}/{file_name}",
            get(download),
        )
        .route(
            "/_matrix/client/v1/media/thumbnail/{server}/{id}",
            get(thumbnail),
        )
        .route("/_matrix/media/v1/create", post(create));
    for prefix in ["/_matrix/media/v3", "/_matrix/media/r0"] {
        router = router
            .route(&format!("{prefix}/config"), get(config))
            .route(&format!("{prefix}/preview_url"), get(preview))
            .route(&format!("{prefix}/upload"), post(upload))
            .route(
                &format!("{prefix}/upload/{{server}}/{{id}}"),
                put(upload_to),
            )
            .route(
                &format!("{prefix}/download/{{server}}/{{id}}"),
                get(legacy_download),
            )
            .route(
                &format!("{prefix}/download/{{server}}/{{id}}/{{file_name}}"),
                get(legacy_download),
            )
            .route(
                &format!("{prefix}/thumbnail/{{server}}/{{id}}"),
                get(legacy_thumbnail),
            );
    }
    router
}

/// The caller, from the access token (401 without one); the request comes back whole.
async fn caller(
    services: &Arc<Services>,
    request: Request,
) -> Result<(crate::service::Session, Request)> {
    let (mut parts, body) = request.into_parts();
    let Authenticated(session) = Authenticated::from_request_parts(&mut parts, services).await?;
    Ok((session, Request::from_parts(parts, body)))
}

/// # `GET /_matrix/client/v1/media/config`
async fn config(State(services): State<Arc<Services>>, request: Request) -> Result<Json<Value>> {
    caller(&services, request).await?;
    Ok(Json(
        json!({ "m.upload.size": services.config.media.max_upload_bytes }),
    ))
}

/// # `GET /_matrix/client/v1/media/preview_url?url=…`
async fn preview(State(services): State<Arc<Services>>, request: Request) -> Result<Json<Value>> {
    let (session, request) = caller(&services, request).await?;
    let query = query_params(request.uri().query());
    let url = query
        .get("url")
        .ok_or_else(|| Error::missing_param("The url parameter is required"))?;
    Ok(Json(services.url_preview(&session.user_id, url).await?))
}

fn declared(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 255)
        .map(str::to_owned)
}

fn filename(uri: &Uri) -> Result<Option<String>> {
    let name = query_params(uri.query()).remove("filename");
    if name
        .as_deref()
        .is_some_and(|n| n.len() > 255 || n.chars().any(char::is_control))
    {
        return Err(Error::invalid_param(
            "filename must be at most 255 bytes without control characters",
        ));
    }
    Ok(name)
}

fn too_large_declared(services: &Services, headers: &HeaderMap) -> Result<()> {
    let limit = services.config.media.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Error::too_large(limit));
    }
    Ok(())
}

/// # `POST /_matrix/media/v3/upload?filename=…`
async fn upload(State(services): State<Arc<Services>>, request: Request) -> Result<Json<Value>> {
    let (session, request) = caller(&services, request).await?;
    too_large_declared(&services, request.headers())?;
    let content_type = declared(request.headers());
    let filename = filename(request.uri())?;
    let body = request.into_body().into_data_stream();
    let uri = services
        .upload_media(&session.user_id, content_type, filename, body)
        .await?;
    Ok(Json(json!({ "content_uri": uri })))
}

/// # `POST /_matrix/media/v1/create`
async fn create(State(services): State<Arc<Services>>, request: Request) -> Result<Json<Value>> {
    let (session, _) = caller(&services, request).await?;
    let (uri, expires) = services.create_pending_media(&session.user_id).await?;
    Ok(Json(
        json!({ "content_uri": uri, "unused_expires_at": expires }),
    ))
}

/// # `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
async fn upload_to(
    State(services): State<Arc<Services>>,
    Path((server, id)): Path<(String, String)>,
    request: Request,
) -> Result<Json<Value>> {
    let (session, request) = caller(&services, request).await?;
    too_large_declared(&services, request.headers())?;
    let content_type = declared(request.headers());
    let filename = filename(request.uri())?;
    let body = request.into_body().into_data_stream();
    services
        .upload_pending_media(
            &session.user_id,
            (&server, &id),
            content_type,
            filename,
            body,
        )
        .await?;
    Ok(Json(json!({})))
}

fn wait(uri: &Uri) -> Duration {
    query_params(uri.query())
        .get("timeout_ms")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(DEFAULT_WAIT, Duration::from_millis)
}

/// What a media GET asks for.
#[derive(Clone, Copy)]
enum Get {
    Download,
    Thumbnail,
}

/// Serves a download or thumbnail: `parts` are the server name, the media ID and maybe a
/// file name. The built-in logo is public; otherwise the authenticated endpoints need a
/// token and the legacy ones serve only when `media.legacy_unauthenticated` is on (the media
/// freeze): 404 as for media uploaded after a freeze.
async fn media_get(
    services: Arc<Services>,
    parts: Vec<String>,
    request: Request,
    (what, legacy): (Get, bool),
) -> Result<Response> {
    let [server, id, name @ ..] = parts.as_slice() else {
        return Err(Error::not_found("No such media"));
    };
    if let Some(logo) = built_in(&services, server, id) {
        return Ok(logo);
    }
    let request = if legacy {
        if !services.config.media.legacy_unauthenticated {
            return Err(Error::not_found(
                "Unauthenticated media downloads are frozen here: use /_matrix/client/v1/media",
            ));
        }
        request
    } else {
        caller(&services, request).await?.1
    };
    match what {
        Get::Download => {
            serve_download(&services, server, id, name.first().cloned(), request.uri()).await
        }
        Get::Thumbnail => serve_thumbnail(&services, server, id, request.uri()).await,
    }
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]`
async fn download(
    State(services): State<Arc<Services>>,
    Path(parts): Path<Vec<String>>,
    request: Request,
) -> Result<Response> {
    media_get(services, parts, request, (Get::Download, false)).await
}

/// # `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
async fn thumbnail(
    State(services): State<Arc<Services>>,
    Path(parts): Path<Vec<String>>,
    request: Request,
) -> Result<Response> {
    media_get(services, parts, request, (Get::Thumbnail, false)).await
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}[/{fileName}]`
async fn legacy_download(
    State(services): State<Arc<Services>>,
    Path(parts): Path<Vec<String>>,
    request: Request,
) -> Result<Response> {
    media_get(services, parts, request, (Get::Download, true)).await
}

/// # `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}`
async fn legacy_thumbnail(
    State(services): State<Arc<Services>>,
    Path(parts): Path<Vec<String>>,
    request: Request,
) -> Result<Response> {
    media_get(services, parts, request, (Get::Thumbnail, true)).await
}

async fn serve_download(
    services: &Services,
    server: &str,
    id: &str,
    name: Option<String>,
    uri: &Uri,
) -> Result<Response> {
    let (_, mut file) = services.media_file(server, id, wait(uri)).await?;
    if name.is_some() {
        file.filename = name;
    }
    send_file(file).await
}

async fn serve_thumbnail(
    services: &Services,
    server: &str,
    id: &str,
    uri: &Uri,
) -> Result<Response> {
    let query = query_params(uri.query());
    let side = |key: &str| -> Result<u32> {
        query
            .get(key)
            .ok_or_else(|| Error::missing_param(format!("{key} is required")))?
            .parse::<u32>()
            .map_err(|_| Error::invalid_param(format!("{key} must be a positive integer")))
    };
    let method = match query.get("method").map(String::as_str) {
        None | Some("scale") => Method::Scale,
        Some("crop") => Method::Crop,
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "method must be crop or scale, not {other}"
            )));
        }
    };
    let spec = ThumbnailSpec {
        width: side("width")?,
        height: side("height")?,
        method,
    };
    let file = services
        .media_thumbnail((server, id), spec, wait(uri))
        .await?;
    send_file(file).await
}

/// `inline` or `attachment`, with the file name encoded per RFC 6266.
fn disposition(content_type: &str, filename: Option<&str>) -> HeaderValue {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let kind = if INLINE_TYPES.contains(&essence.as_str()) {
        "inline"
    } else {
        "attachment"
    };
    let value = match filename {
        Some(name)
            if name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" ._-".contains(&b)) =>
        {
            format!("{kind}; filename=\"{name}\"")
        }
        Some(name) => {
            let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes())
                .collect::<String>()
                .replace('+', "%20");
            format!("{kind}; filename*=utf-8''{encoded}")
        }
        None => kind.to_owned(),
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("attachment"))
}

async fn send_file(file: StoredFile) -> Result<Response> {
    let handle = tokio::fs::File::open(&file.path)
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!("opening {}: {e}", file.path.display())))?;
    let content_type = file
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    let content_type_value = HeaderValue::from_str(content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(handle));
    Ok((
        [
            (header::CONTENT_TYPE, content_type_value),
            (
                header::CONTENT_DISPOSITION,
                disposition(content_type, file.filename.as_deref()),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(file.size)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                     style-src 'unsafe-inline'; media-src 'self'; object-src 'self'",
                ),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::HeaderName::from_static("cross-origin-resource-policy"),
                HeaderValue::from_static("cross-origin"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=86400, immutable"),
            ),
        ],
        body,
    )
        .into_response())
}

/// The built-in Ethereum logo (the wallet sign-in icon), public everywhere; an SVG can carry
/// script, so it is served sandboxed.
fn built_in(services: &Services, server: &str, id: &str) -> Option<Response> {
    if server != services.config.server_name.as_str() || id != LOGO_MEDIA_ID {
        return None;
    }
    Some(
        (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "sandbox; default-src 'none'; style-src 'unsafe-inline'",
                ),
                (
                    header::CONTENT_DISPOSITION,
                    "inline; filename=\"ethereum.svg\"",
                ),
                (header::CACHE_CONTROL, "public, max-age=86400"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            LOGO_SVG,
        )
            .into_response(),
    )
}
