//! The OAuth 2.0 API's endpoints: discovery, client registration, the token and revocation
//! endpoints (JSON for clients), and the authorize pages (HTML for people, in `pages`).

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

use crate::service::{
    Limit, Services,
    oauth::{DEVICE_CODE_GRANT, OAuthError},
};

mod account;
mod pages;

/// Where the OAuth endpoints live (beside, not under, the Client-Server API).
pub const PREFIX: &str = "/oauth2";
/// Most parameters one form may carry (every OAuth request needs a handful).
const MAX_FORM_FIELDS: usize = 32;

/// Every OAuth route.
pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/_matrix/client/v1/auth_metadata", get(metadata))
        .route(
            "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
            get(metadata),
        )
        .route(
            "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer",
            get(issuer),
        )
        .route(&format!("{PREFIX}/registration"), post(register))
        .route(&format!("{PREFIX}/token"), post(token))
        .route(&format!("{PREFIX}/revoke"), post(revoke))
        .route(
            &format!("{PREFIX}/device_authorization"),
            post(device_authorization),
        )
        .merge(pages::routes())
}

/// An OAuth error as the client reads it (`invalid_client` is 401, the others 400).
fn refusal(error: &OAuthError) -> Response {
    let status = match error.error {
        "invalid_client" => StatusCode::UNAUTHORIZED,
        "slow_down" if error.description.starts_with("too many") => StatusCode::TOO_MANY_REQUESTS,
        "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    no_store((status, Json(error.body())).into_response())
}

/// 429 with an OAuth body.
fn too_many() -> Response {
    no_store(
        (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"error": "slow_down", "error_description": "too many requests; wait a moment"})),
        )
            .into_response(),
    )
}

/// Token answers must not be cached (RFC 6749 §5.1).
fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// # `GET /_matrix/client/v1/auth_metadata` (and MSC2965's unstable path)
async fn metadata(State(services): State<Arc<Services>>) -> Json<Value> {
    let base = services.config.public_baseurl();
    let at = |path: &str| format!("{}{}", base.trim_end_matches('/'), path);
    Json(json!({
        "issuer": base,
        "authorization_endpoint": at(&format!("{PREFIX}/authorize")),
        "token_endpoint": at(&format!("{PREFIX}/token")),
        "registration_endpoint": at(&format!("{PREFIX}/registration")),
        "revocation_endpoint": at(&format!("{PREFIX}/revoke")),
        "device_authorization_endpoint": at(&format!("{PREFIX}/device_authorization")),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "fragment"],
        "grant_types_supported": ["authorization_code", "refresh_token", DEVICE_CODE_GRANT],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["urn:matrix:client:api:*", "urn:matrix:client:device:*"],
        "account_management_uri": at(&format!("{PREFIX}/account")),
        "account_management_actions_supported": account::ACTIONS,
        "prompt_values_supported": if services.config.registration.open {
            json!(["create"])
        } else {
            json!([])
        },
    }))
}

/// # `GET /_matrix/client/unstable/org.matrix.msc2965/auth_issuer` (what older clients ask)
async fn issuer(State(services): State<Arc<Services>>) -> Json<Value> {
    Json(json!({ "issuer": services.config.public_baseurl() }))
}

/// # `POST /oauth2/registration` (RFC 7591)
async fn register(
    State(services): State<Arc<Services>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    if services
        .rate_limit(Limit::RegisterPerIp, &peer.ip().to_string())
        .is_err()
    {
        return too_many();
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return refusal(&OAuthError::new(
            "invalid_client_metadata",
            "the registration is not JSON",
        ));
    };
    match services.register_oauth_client(&body).await {
        Ok(client) => no_store((StatusCode::CREATED, Json(client)).into_response()),
        Err(error) => refusal(&error),
    }
}

/// A form body (`application/x-www-form-urlencoded`), each key at most once.
fn form(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, OAuthError> {
    let form_typed = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_typed {
        return Err(OAuthError::new(
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut pairs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (key, value) in form_urlencoded::parse(body) {
        if pairs.len() == MAX_FORM_FIELDS {
            return Err(OAuthError::new("invalid_request", "too many parameters"));
        }
        if !seen.insert(key.clone()) {
            return Err(OAuthError::new(
                "invalid_request",
                format!("{key} appears twice"),
            ));
        }
        pairs.push((key.into_owned(), value.into_owned()));
    }
    Ok(pairs)
}

/// # `POST /oauth2/token`
async fn token(State(services): State<Arc<Services>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match form(&headers, &body) {
        Ok(form) => form,
        Err(error) => return refusal(&error),
    };
    match services.oauth_token(&form).await {
        Ok(tokens) => no_store(Json(tokens.body()).into_response()),
        Err(error) => refusal(&error),
    }
}

/// # `POST /oauth2/revoke` (RFC 7009)
async fn revoke(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match form(&headers, &body) {
        Ok(form) => form,
        Err(error) => return refusal(&error),
    };
    let get = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let (Some(token), Some(client_id)) = (get("token"), get("client_id")) else {
        return refusal(&OAuthError::new(
            "invalid_request",
            "token and client_id are required",
        ));
    };
    match services.oauth_client(client_id).await {
        Ok(Some(_)) => {}
        Ok(None) => return refusal(&OAuthError::new("invalid_client", "unknown client")),
        Err(error) => return refusal(&error),
    }
    match services.revoke_oauth_token(client_id, token).await {
        Ok(()) => no_store(Json(json!({})).into_response()),
        Err(error) => refusal(&error),
    }
}

/// # `POST /oauth2/device_authorization` (RFC 8628 §3.1)
async fn device_authorization(
    State(services): State<Arc<Services>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if services
        .rate_limit(Limit::LoginPerIp, &peer.ip().to_string())
        .is_err()
    {
        return too_many();
    }
    let form = match form(&headers, &body) {
        Ok(form) => form,
        Err(error) => return refusal(&error),
    };
    let get = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let Some(client_id) = get("client_id") else {
        return refusal(&OAuthError::new("invalid_request", "client_id is required"));
    };
    match services
        .start_device_grant(client_id, get("scope").unwrap_or_default())
        .await
    {
        Ok(answer) => no_store(Json(answer).into_response()),
        Err(error) => refusal(&error),
    }
}
