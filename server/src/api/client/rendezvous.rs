//! MSC4108 rendezvous (QR code login, as matrix-rust-sdk and Element X speak it): a new device
//! and a signed-in one exchange end-to-end encrypted messages through a small text blob here,
//! taking turns to write it (each write conditional on the ETag last seen), while the new
//! device gets its session through the OAuth device authorization grant. The server reads
//! nothing of what passes; sessions are short-lived, small and few.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::json;

use crate::{
    http::error::{Error, Result},
    service::{Limit, Services, secrets},
    store::rendezvous::{Rendezvous, RendezvousWrite},
};

/// Where sessions are created; each lives at this path plus `/{id}`.
const PATH: &str = "/_matrix/client/unstable/org.matrix.msc4108/rendezvous";
/// Largest message (the protocol's are well under 1 KiB; Synapse allows 4 KiB too).
const MAX_CONTENT: usize = 4096;
/// How long a session lives from its creation: the whole login, a person approving it on
/// the device page included.
const LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Most sessions open at once on the server.
const MAX_LIVE: i64 = 1000;

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route(PATH, post(create)).route(
        &format!("{PATH}/{{id}}"),
        axum::routing::get(read).put(write).delete(end),
    )
}

/// The body, which must be `text/plain` and small.
fn content(headers: &HeaderMap, body: &Bytes) -> Result<String> {
    let plain = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/plain"));
    if !plain {
        return Err(Error::invalid_param("a rendezvous message is text/plain"));
    }
    if body.len() > MAX_CONTENT {
        return Err(Error::too_large(MAX_CONTENT));
    }
    String::from_utf8(body.to_vec())
        .map_err(|_| Error::invalid_param("a rendezvous message is UTF-8 text"))
}

/// A fresh opaque ETag.
fn etag() -> String {
    format!("\"{}\"", secrets::random_alphanumeric(16))
}

/// The headers every answer about a session carries.
fn session_headers(response: &mut Response, session: &Rendezvous) {
    let date = |ms: i64| {
        let at = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        HeaderValue::from_str(&httpdate::fmt_http_date(at)).ok()
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&session.etag) {
        headers.insert(header::ETAG, etag);
    }
    if let Some(expires) = date(session.expires_ms) {
        headers.insert(header::EXPIRES, expires);
    }
    if let Some(modified) = date(session.modified_ms) {
        headers.insert(header::LAST_MODIFIED, modified);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-transform"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn gone() -> Error {
    Error::not_found("This rendezvous session does not exist or has expired")
}

/// # `POST /_matrix/client/unstable/org.matrix.msc4108/rendezvous`
async fn create(
    State(services): State<Arc<Services>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    services.rate_limit(Limit::LoginPerIp, &peer.ip().to_string())?;
    let content = content(&headers, &body)?;
    let now = services.now_ms();
    let lifetime = i64::try_from(LIFETIME.as_millis()).unwrap_or(i64::MAX);
    let session = Rendezvous {
        etag: etag(),
        content,
        modified_ms: now,
        expires_ms: now.saturating_add(lifetime),
    };
    let id = secrets::random_alphanumeric(24);
    if !services
        .store
        .create_rendezvous(&id, &session, now, MAX_LIVE)
        .await?
    {
        return Err(Error::limit_exceeded(Duration::from_secs(10)));
    }
    let url = format!(
        "{}{}/{id}",
        services.config.public_baseurl().trim_end_matches('/'),
        PATH
    );
    let mut response = (StatusCode::CREATED, Json(json!({ "url": url }))).into_response();
    session_headers(&mut response, &session);
    Ok(response)
}

/// # `GET …/rendezvous/{id}`: the content, or 304 while it is what `If-None-Match` names.
async fn read(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let session = services
        .store
        .rendezvous(&id, services.now_ms())
        .await?
        .ok_or_else(gone)?;
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == session.etag);
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = session.content.clone().into_response();
        // Exactly `text/plain`: matrix-sdk refuses anything else, parameters included.
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        response
    };
    session_headers(&mut response, &session);
    Ok(response)
}

/// # `PUT …/rendezvous/{id}`: replaces the content if it is still what `If-Match` names.
async fn write(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let content = content(&headers, &body)?;
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::missing_param("a rendezvous write needs If-Match"))?;
    let now = services.now_ms();
    let new = etag();
    let expires_ms = match services
        .store
        .write_rendezvous(&id, if_match, (&new, &content), now)
        .await?
    {
        RendezvousWrite::Done(expires_ms) => expires_ms,
        RendezvousWrite::Gone => return Err(gone()),
        RendezvousWrite::Changed => {
            let mut extra = serde_json::Map::new();
            extra.insert(
                "org.matrix.msc4108.errcode".to_owned(),
                json!("M_CONCURRENT_WRITE"),
            );
            return Err(Error::Detailed {
                status: StatusCode::PRECONDITION_FAILED,
                errcode: "M_UNKNOWN",
                message: "The session was written since you read it".to_owned(),
                extra,
            });
        }
    };
    let session = Rendezvous {
        etag: new,
        content,
        modified_ms: now,
        expires_ms,
    };
    let mut response = StatusCode::ACCEPTED.into_response();
    session_headers(&mut response, &session);
    Ok(response)
}

/// # `DELETE …/rendezvous/{id}`
async fn end(State(services): State<Arc<Services>>, Path(id): Path<String>) -> Result<Response> {
    if !services.store.delete_rendezvous(&id).await? {
        return Err(gone());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
