//! The wallet sign-in page for ordinary Matrix clients (`m.login.sso`) and its JSON calls.
//!
//! The page itself is static (`frontend/`, embedded in the binary); it reads its mode from
//! its own URL and talks to the server only through the endpoints below.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    extract::{ConnectInfo, Path, RawQuery, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use ruma::api::client::uiaa::AuthType;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    http::{
        error::{Error, Result},
        ruma::{JsonBody, query_params},
    },
    service::{Limit, SIWE_LOGIN_TYPE, SSO_IDP_ID, Services, SsoRedirect},
};

const PAGE: &str = include_str!("../../../frontend/wallet.html");
const SCRIPT: &str = include_str!("../../../frontend/wallet.js");
const STYLE: &str = include_str!("../../../frontend/wallet.css");
/// The Ethereum logo: the page's header and the identity provider's icon.
pub const LOGO_SVG: &str = include_str!("../../../frontend/ethereum.svg");

/// The page may load only its own script, style and images, talk only to this server, and
/// never be framed (a framed sign-in page is a clickjacking target).
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

const UNSTABLE: &str = "/_matrix/client/unstable/io.matrixon";

/// Every route of the wallet page.
pub fn routes() -> Router<Arc<Services>> {
    let mut router = Router::new();
    for version in ["r0", "v3"] {
        router = router
            .route(
                &format!("/_matrix/client/{version}/login/sso/redirect"),
                get(redirect),
            )
            .route(
                &format!("/_matrix/client/{version}/login/sso/redirect/{{idp_id}}"),
                get(redirect_to_provider),
            )
            .route(
                &format!("/_matrix/client/{version}/auth/{{auth_type}}/fallback/web"),
                get(uia_fallback),
            );
    }
    router
        .route(&format!("{UNSTABLE}/sso/static/{{name}}"), get(asset))
        .route(&format!("{UNSTABLE}/siwe/message"), post(siwe_message))
        .route(&format!("{UNSTABLE}/sso/login"), post(sso_login))
        .route(
            &format!("{UNSTABLE}/sso/authenticate"),
            post(sso_authenticate),
        )
        .route(
            &format!("{UNSTABLE}/sso/session/{{session}}"),
            get(session_summary),
        )
        .route(&format!("{UNSTABLE}/gate/page/{{room}}"), get(gate_page))
        .route(&format!("{UNSTABLE}/gate/room/{{room}}"), get(gate_room))
        .route(
            &format!("{UNSTABLE}/gate/room/{{room}}/check"),
            post(gate_room_check),
        )
}

fn visited(room: &str) -> Result<ruma::OwnedRoomOrAliasId> {
    ruma::OwnedRoomOrAliasId::try_from(room)
        .map_err(|_| Error::invalid_param(format!("{room} is not a room id or alias")))
}

fn peer(addr: SocketAddr) -> String {
    addr.ip().to_string()
}

/// # `GET /_matrix/client/unstable/io.matrixon/gate/page/{roomIdOrAlias}`
///
/// The gate page: a room's rule in words, a wallet's check, and joining with it.
async fn gate_page(Path(room): Path<String>) -> Result<Response> {
    visited(&room)?;
    Ok(page())
}

/// # `GET /_matrix/client/unstable/io.matrixon/gate/room/{roomIdOrAlias}`
async fn gate_room(
    State(services): State<Arc<Services>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
) -> Result<Json<Value>> {
    let room = visited(&room)?;
    Ok(Json(services.gate_description(&room, &peer(addr)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VisitorCheck {
    address: String,
}

/// # `POST /_matrix/client/unstable/io.matrixon/gate/room/{roomIdOrAlias}/check`
async fn gate_room_check(
    State(services): State<Arc<Services>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(room): Path<String>,
    JsonBody(body): JsonBody<VisitorCheck>,
) -> Result<Json<Value>> {
    let room = visited(&room)?;
    Ok(Json(
        services
            .gate_visitor_check(&room, &body.address, &peer(addr))
            .await?,
    ))
}

/// # `GET /_matrix/client/v3/login/sso/redirect?redirectUrl=…`
async fn redirect(
    State(services): State<Arc<Services>>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let mut redirect_urls = form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == "redirectUrl")
        .map(|(_, value)| value.into_owned());
    let Some(redirect_url) = redirect_urls.next() else {
        return Err(Error::missing_param("redirectUrl is required"));
    };
    if redirect_urls.next().is_some() {
        // The page reads the first one: it must be the only one the server checked.
        return Err(Error::invalid_param("Give redirectUrl once"));
    }
    services.sso_redirect_target(&redirect_url)?;
    Ok(page())
}

/// # `GET /_matrix/client/v3/login/sso/redirect/{idpId}?redirectUrl=…`
async fn redirect_to_provider(
    services: State<Arc<Services>>,
    Path(idp_id): Path<String>,
    query: RawQuery,
) -> Result<Response> {
    if idp_id != SSO_IDP_ID {
        return Err(Error::not_found(format!(
            "No identity provider {idp_id}; this server offers {SSO_IDP_ID}"
        )));
    }
    redirect(services, query).await
}

/// # `GET /_matrix/client/v3/auth/{authType}/fallback/web?session=…`
async fn uia_fallback(
    State(services): State<Arc<Services>>,
    Path(auth_type): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    if auth_type != AuthType::Sso.as_str() && auth_type != SIWE_LOGIN_TYPE {
        return Err(Error::not_found(format!(
            "No fallback page for {auth_type}"
        )));
    }
    let params = query_params(query.as_deref());
    let Some(session) = params.get("session") else {
        return Err(Error::missing_param("session is required"));
    };
    services.uia_session_summary(session).await?;
    Ok(page())
}

/// The wallet page (its script reads its mode from the URL).
pub(crate) fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

/// # `GET /_matrix/client/unstable/io.matrixon/sso/static/{name}`
async fn asset(Path(name): Path<String>) -> Result<Response> {
    let (content_type, body) = match name.as_str() {
        "wallet.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "wallet.css" => ("text/css; charset=utf-8", STYLE),
        "ethereum.svg" => ("image/svg+xml", LOGO_SVG),
        _ => return Err(Error::not_found("No such file")),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageRequest {
    address: String,
    chain_id: u64,
    nonce: String,
}

/// # `POST /_matrix/client/unstable/io.matrixon/siwe/message`
async fn siwe_message(
    State(services): State<Arc<Services>>,
    JsonBody(body): JsonBody<MessageRequest>,
) -> Result<Json<Value>> {
    let message = services.siwe_message(&body.address, body.chain_id, &body.nonce)?;
    Ok(Json(json!({ "message": message })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    redirect_url: String,
    message: String,
    signature: String,
}

/// # `POST /_matrix/client/unstable/io.matrixon/sso/login`
async fn sso_login(
    State(services): State<Arc<Services>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(body): JsonBody<LoginRequest>,
) -> Result<Json<SsoRedirect>> {
    services.rate_limit(Limit::LoginPerIp, &peer.ip().to_string())?;
    let redirect = services
        .sso_login(&body.redirect_url, &body.message, &body.signature)
        .await?;
    Ok(Json(redirect))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthenticateRequest {
    session: String,
    stage: String,
    message: String,
    signature: String,
}

/// # `POST /_matrix/client/unstable/io.matrixon/sso/authenticate`
async fn sso_authenticate(
    State(services): State<Arc<Services>>,
    JsonBody(body): JsonBody<AuthenticateRequest>,
) -> Result<Json<Value>> {
    services
        .sso_authenticate(&body.session, &body.stage, &body.message, &body.signature)
        .await?;
    Ok(Json(json!({})))
}

/// # `GET /_matrix/client/unstable/io.matrixon/sso/session/{session}`
///
/// What the fallback page asks the user to approve, so that a link to it cannot get a
/// signature for an action the user does not see.
async fn session_summary(
    State(services): State<Arc<Services>>,
    Path(session): Path<String>,
) -> Result<Json<Value>> {
    let (user_id, action) = services.uia_session_summary(&session).await?;
    Ok(Json(json!({ "user_id": user_id, "action": action })))
}
