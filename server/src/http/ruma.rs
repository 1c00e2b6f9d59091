//! The request extractor that turns an HTTP request into a typed ruma request, and the one
//! handler shape every Client-Server route is registered with.

use std::{
    any::TypeId,
    future::Future,
    net::SocketAddr,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
};

use axum::{
    Router,
    body::Body,
    extract::{
        ConnectInfo, FromRequest, FromRequestParts, Path, Request, State, rejection::PathRejection,
    },
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::request::Parts;
use ruma::api::{
    IncomingRequest, OutgoingResponse,
    error::{DeserializationError, FromHttpRequestError},
    path_builder::PathBuilder,
};

use super::{
    auth::{Authenticate, Credentials, access_token},
    error::{Error, Result},
};
use crate::service::Services;

/// A decoded, authenticated request of endpoint `T`.
pub struct Ruma<T: IncomingRequest>
where
    T::Authentication: Authenticate,
{
    /// The typed request.
    pub body: T,
    /// The caller, as the endpoint's authentication scheme defines it.
    pub auth: <T::Authentication as Authenticate>::Identity,
    /// The client's address (for rate limits and device last-seen).
    pub client_ip: Option<String>,
    /// The body as received, for the few handlers that keep keys ruma's types drop (a
    /// join's custom member content).
    pub raw_body: Bytes,
}

/// The peer address of the connection, when the server recorded it.
pub fn client_ip(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
}

/// Reads the whole body, refusing more than the configured limit with 413 `M_TOO_LARGE`.
pub async fn read_body(parts: &Parts, body: Body, limit: usize) -> Result<Bytes> {
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Error::too_large(limit));
    }
    let mut pieces = body.into_data_stream();
    let mut bytes = BytesMut::new();
    while let Some(piece) = pieces.next().await {
        let piece = piece
            .map_err(|e| Error::bad_request(format!("The request body could not be read: {e}")))?;
        if bytes.len() + piece.len() > limit {
            return Err(Error::too_large(limit));
        }
        bytes.extend_from_slice(&piece);
    }
    Ok(bytes.freeze())
}

/// `M_NOT_JSON` for a body that is not JSON at all (empty bodies are left to the endpoint).
pub fn ensure_json(bytes: &[u8]) -> Result<()> {
    // JSON is UTF-8; skipping over a string does not check that, so it is checked here.
    if std::str::from_utf8(bytes).is_err()
        || !bytes.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err()
    {
        return Err(Error::not_json());
    }
    // NUL cannot be stored in PostgreSQL text, and no Matrix string needs it.
    if bytes.windows(6).any(|w| w == b"\\u0000") {
        return Err(Error::bad_json("Strings may not contain NUL (\\u0000)"));
    }
    Ok(())
}

/// Reads a JSON body for endpoints ruma has no type for: 413, `M_NOT_JSON` or `M_BAD_JSON`
/// exactly as for ruma requests.
pub async fn json_body<T: serde::de::DeserializeOwned>(
    parts: &Parts,
    body: Body,
    limit: usize,
) -> Result<T> {
    let bytes = read_body(parts, body, limit).await?;
    ensure_json(&bytes)?;
    let bytes = if bytes.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        bytes
    };
    serde_json::from_slice(&bytes).map_err(|e| Error::bad_json(e.to_string()))
}

/// A JSON body for endpoints ruma has no type for, refused like ruma's (413, `M_NOT_JSON`,
/// `M_BAD_JSON`).
pub struct JsonBody<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromRequest<Arc<Services>> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(request: Request, services: &Arc<Services>) -> Result<Self> {
        let (parts, body) = request.into_parts();
        json_body(&parts, body, services.config.max_request_bytes)
            .await
            .map(Self)
    }
}

/// A JSON value as a typed raw Matrix event or content, as ruma's responses hold them.
pub fn to_raw<T>(value: &serde_json::Value) -> Result<ruma::serde::Raw<T>> {
    serde_json::value::to_raw_value(value)
        .map(ruma::serde::Raw::from_json)
        .map_err(|e| Error::Internal(e.into()))
}

/// The query string's parameters, last one wins; never a rejection.
pub fn query_params(query: Option<&str>) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn parse_error(err: FromHttpRequestError) -> Error {
    match err {
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            Error::bad_json(e.to_string())
        }
        FromHttpRequestError::Deserialization(DeserializationError::Query(e)) => {
            Error::invalid_param(format!("Invalid query parameters: {e}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Ident(e)) => {
            Error::invalid_param(format!("Invalid identifier in the path: {e}"))
        }
        FromHttpRequestError::Deserialization(e) => Error::bad_json(e.to_string()),
        FromHttpRequestError::MethodMismatch { .. } => Error::method_not_allowed(),
        other => Error::bad_json(other.to_string()),
    }
}

/// ruma 0.16's `LoginInfo` deserializer indexes `data["type"]` and panics when the key is
/// missing; refuse such bodies before ruma sees them.
fn check_login_body(bytes: &[u8]) -> Result<()> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| Error::not_json())?;
    match value.get("type") {
        Some(serde_json::Value::String(_)) => Ok(()),
        _ => Err(Error::bad_json("Missing string field `type`")),
    }
}

/// A room version this server does not have is 400 `M_UNSUPPORTED_ROOM_VERSION`, even one
/// ruma's identifier type refuses to parse (`my_bad_version`), as Synapse answers.
fn check_room_version(bytes: &[u8], key: &str) -> Result<()> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Ok(());
    };
    match value.get(key).and_then(serde_json::Value::as_str) {
        Some(version) if !crate::service::rooms::SUPPORTED_ROOM_VERSIONS.contains(&version) => {
            Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::UnsupportedRoomVersion,
                format!("Room version {version} is not supported here"),
            ))
        }
        _ => Ok(()),
    }
}

impl<T> FromRequest<Arc<Services>> for Ruma<T>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: Authenticate,
{
    type Rejection = Error;

    async fn from_request(req: Request, services: &Arc<Services>) -> Result<Self> {
        let (mut parts, body) = req.into_parts();
        let mut path_args: Vec<String> =
            match Path::<Vec<String>>::from_request_parts(&mut parts, services).await {
                Ok(Path(args)) => args,
                Err(PathRejection::MissingPathParams(_)) => Vec::new(),
                Err(e) => return Err(Error::invalid_param(format!("Invalid path: {e}"))),
            };
        if parts.extensions.get::<EmptyStateKey>().is_some() {
            path_args.push(String::new());
        }
        if path_args.iter().any(|arg| arg.contains('\0')) {
            return Err(Error::invalid_param("The path contains a NUL character"));
        }
        let client_ip = client_ip(&parts);
        let token = access_token(&parts);
        let signs_body = <T::Authentication as Authenticate>::SIGNS_BODY;
        let mut bytes = Bytes::new();
        let mut body = Some(body);
        if signs_body && let Some(body) = body.take() {
            bytes = Box::pin(read_body(&parts, body, services.config.max_request_bytes)).await?;
            ensure_json(&bytes)?;
        }
        // Boxed, as the other awaits of a request: a handler's future is as large as its
        // largest step, and a waiting sync keeps its future for as long as it waits.
        let auth = Box::pin(<T::Authentication as Authenticate>::authenticate(
            services,
            Credentials {
                token: token.as_deref(),
                ip: client_ip.clone(),
                parts: &parts,
                body: &bytes,
            },
        ))
        .await?;
        if <T::Authentication as Authenticate>::is_guest(&auth) {
            super::guests::ensure_guest_may(&parts.method, parts.uri.path())?;
        }
        if let Some(body) = body {
            bytes = Box::pin(read_body(&parts, body, services.config.max_request_bytes)).await?;
            ensure_json(&bytes)?;
        }
        if TypeId::of::<T>() == TypeId::of::<ruma::api::client::session::login::v3::Request>() {
            check_login_body(&bytes)?;
        }
        if TypeId::of::<T>() == TypeId::of::<ruma::api::client::room::upgrade_room::v3::Request>() {
            check_room_version(&bytes, "new_version")?;
        }
        if TypeId::of::<T>() == TypeId::of::<ruma::api::client::room::create_room::v3::Request>() {
            check_room_version(&bytes, "room_version")?;
        }
        let bytes = with_legacy_uia_user(bytes);
        // An empty POST body is an empty object where every field is optional (matrix-nio
        // joins and leaves that way, and Synapse accepts it).
        let retry_empty = bytes.is_empty() && parts.method == http::Method::POST;
        let retry_parts = retry_empty.then(|| clone_parts(&parts));
        let parse = |request: http::Request<Bytes>| {
            // A panic inside a third-party deserializer must not take the connection down
            // with a 500; it is reported as the malformed input it is.
            catch_unwind(AssertUnwindSafe(|| {
                T::try_from_http_request(request, &path_args)
            }))
            .map_err(|_| Error::bad_json("The request could not be parsed"))
        };
        let raw_body = bytes.clone();
        let mut parsed = parse(http::Request::from_parts(parts, bytes))?;
        if parsed.is_err()
            && let Some(parts) = retry_parts
        {
            parsed = parse(http::Request::from_parts(parts, Bytes::from_static(b"{}")))?;
        }
        let body = parsed.map_err(parse_error)?;
        Ok(Self {
            body,
            auth,
            client_ip,
            raw_body,
        })
    }
}

/// A UIA password stage in the pre-r0 form (`"user": …` instead of `"identifier"`, which
/// Synapse still accepts and SyTest sends) rewritten to the current one.
fn with_legacy_uia_user(bytes: Bytes) -> Bytes {
    let looks_legacy = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    if !looks_legacy(b"\"auth\"") || !looks_legacy(b"\"user\"") {
        return bytes;
    }
    let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return bytes;
    };
    let Some(auth) = body
        .get_mut("auth")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return bytes;
    };
    if auth.contains_key("identifier")
        || auth.get("type").and_then(|t| t.as_str()) != Some("m.login.password")
    {
        return bytes;
    }
    let Some(user) = auth.remove("user") else {
        return bytes;
    };
    auth.insert(
        "identifier".to_owned(),
        serde_json::json!({ "type": "m.id.user", "user": user }),
    );
    serde_json::to_vec(&body).map_or(bytes, Bytes::from)
}

/// A copy of a request head (extensions are not needed to parse a ruma request).
fn clone_parts(parts: &Parts) -> Parts {
    let mut request = http::Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}

/// Renders a handler's result: the ruma response, or the Matrix error.
pub fn respond<R: OutgoingResponse>(result: Result<R>) -> Response {
    match result.and_then(|r| {
        r.try_into_http_response::<BytesMut>()
            .map_err(|e| Error::Internal(anyhow::anyhow!("serializing a response: {e}")))
    }) {
        Ok(response) => response.map(|b| Body::from(b.freeze())).into_response(),
        Err(err) => err.into_response(),
    }
}

/// Marks a request that reached a state endpoint with an empty state key (trailing slash).
#[derive(Clone, Copy)]
struct EmptyStateKey;

/// Registers ruma endpoints on every path their metadata names (r0, v3, unstable).
pub trait RouterExt {
    /// Adds `handler` for endpoint `T`.
    fn ruma<T, F, Fut>(self, handler: F) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: Authenticate,
        F: Fn(Arc<Services>, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T::OutgoingResponse>> + Send + 'static;
}

impl RouterExt for Router<Arc<Services>> {
    fn ruma<T, F, Fut>(mut self, handler: F) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: Authenticate,
        F: Fn(Arc<Services>, Ruma<T>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T::OutgoingResponse>> + Send + 'static,
    {
        let Ok(filter) = MethodFilter::try_from(T::METHOD) else {
            tracing::error!(method = %T::METHOD, "endpoint with an unroutable method skipped");
            return self;
        };
        for path in T::PATH_BUILDER.all_paths() {
            let route = {
                let handler = handler.clone();
                on(
                    filter,
                    move |State(services): State<Arc<Services>>, request: Ruma<T>| {
                        let handler = handler.clone();
                        async move { respond(handler(services, request).await) }
                    },
                )
            };
            // An empty state key is sent as a trailing slash (`/state/m.room.name/`) or left
            // out (`/state/m.room.name`, which Synapse accepts and SyTest sends).
            if let Some(prefix) = path.strip_suffix("{state_key}") {
                let empty_key = route.clone().layer(axum::middleware::map_request(
                    |mut request: Request| async move {
                        request.extensions_mut().insert(EmptyStateKey);
                        request
                    },
                ));
                self = self
                    .route(prefix, empty_key.clone())
                    .route(prefix.trim_end_matches('/'), empty_key);
            }
            self = self.route(path, route);
        }
        self
    }
}
