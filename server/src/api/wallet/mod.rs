//! Matrixon's wallet endpoints under `/_matrix/client/unstable/io.matrixon/`.

mod gate;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{ConnectInfo, Path, Request, State},
    routing::{delete, get},
};
use ruma::api::client::uiaa::AuthData;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    http::{
        auth::Authenticated,
        error::{Error, Result},
        ruma::json_body,
    },
    service::{Limit, Services, SiweParameters, UiaOperation},
};

/// Every wallet route.
pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route(
            "/_matrix/client/unstable/io.matrixon/siwe/nonce",
            get(siwe_nonce),
        )
        .route(
            "/_matrix/client/unstable/io.matrixon/wallets",
            get(list_wallets).post(link_wallet),
        )
        .route(
            "/_matrix/client/unstable/io.matrixon/wallets/{address}",
            delete(unlink_wallet),
        )
        .route(
            "/_matrix/client/unstable/io.matrixon/resolve/{identifier}",
            get(resolve),
        )
        .route(
            "/_matrix/client/unstable/io.matrixon/rooms/{room_id}/invite",
            axum::routing::post(invite),
        )
        .route("/users/{localpart}/did.json", get(did_document))
        .route(
            "/_matrix/client/unstable/io.matrixon/did/{did}",
            get(any_did_document),
        )
        .route(
            "/_matrix/client/unstable/io.matrixon/gate/check",
            axum::routing::post(gate::check),
        )
        .route(
            "/_matrix/client/unstable/io.matrixon/gate/pay",
            axum::routing::post(gate::pay),
        )
        .route(
            "/_matrix/client/unstable/io.matrixon/admin/gate/audit",
            get(gate::audit),
        )
}

/// # `GET /_matrix/client/unstable/io.matrixon/resolve/{identifier}`
///
/// An ENS name, a 0x address, a CAIP-10 account or a DID to the Matrix user behind it.
async fn resolve(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    Path(identifier): Path<String>,
) -> Result<Json<Value>> {
    services.rate_limit(Limit::LookupsPerUser, session.user_id.as_str())?;
    Ok(Json(services.resolve_identifier(&identifier).await?))
}

/// Body of an invite by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteBody {
    identifier: String,
    #[serde(default)]
    reason: Option<String>,
}

/// # `POST /_matrix/client/unstable/io.matrixon/rooms/{roomId}/invite`
///
/// Invites whoever an ENS name, address, CAIP-10 account or DID names.
async fn invite(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    Path(room_id): Path<String>,
    request: Request,
) -> Result<Json<Value>> {
    let room_id = ruma::RoomId::parse(&room_id)
        .map_err(|_| Error::invalid_param(format!("{room_id} is not a room ID")))?;
    services.rate_limit(Limit::LookupsPerUser, session.user_id.as_str())?;
    let (parts, body) = request.into_parts();
    let body: InviteBody = json_body(&parts, body, services.config.max_request_bytes).await?;
    let user_id = services
        .invite_identifier(
            &room_id,
            &session.user_id,
            &body.identifier,
            body.reason.as_deref(),
        )
        .await?;
    Ok(Json(json!({"user_id": user_id})))
}

/// # `GET /users/{localpart}/did.json`
///
/// The did:web document of a local user (`did:web:<server_name>:users:<localpart>`).
async fn did_document(
    State(services): State<Arc<Services>>,
    Path(localpart): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(services.did_document(&localpart).await?))
}

/// # `GET /_matrix/client/unstable/io.matrixon/did/{did}`
///
/// The DID document of a did:pkh, did:ethr (owner and delegates from the registry), did:key
/// or did:web.
async fn any_did_document(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    Path(did): Path<String>,
) -> Result<Json<Value>> {
    services.rate_limit(Limit::LookupsPerUser, session.user_id.as_str())?;
    Ok(Json(services.any_did_document(&did).await?))
}

/// # `GET /_matrix/client/unstable/io.matrixon/siwe/nonce`
async fn siwe_nonce(
    State(services): State<Arc<Services>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
) -> Result<Json<SiweParameters>> {
    services.rate_limit(Limit::LoginPerIp, &peer.ip().to_string())?;
    Ok(Json(services.siwe_parameters().await?))
}

/// # `GET /_matrix/client/unstable/io.matrixon/wallets`
async fn list_wallets(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
) -> Result<Json<Value>> {
    let wallets = services.store.wallets(&session.user_id).await?;
    let wallets: Vec<Value> = wallets
        .into_iter()
        .map(|(address, linked_ms)| json!({"address": address, "linked_ts": linked_ms}))
        .collect();
    Ok(Json(json!({ "wallets": wallets })))
}

/// A request body with the `auth` of user-interactive authentication beside its own fields.
#[derive(Deserialize)]
struct WithAuth<T> {
    #[serde(flatten)]
    body: T,
    auth: Option<AuthData>,
}

/// Decodes the body and runs UIA for wallet management: the body once the caller is proven.
async fn reauthenticated<T: serde::de::DeserializeOwned>(
    services: &Services,
    user_id: &ruma::UserId,
    request: Request,
) -> Result<T> {
    let (parts, body) = request.into_parts();
    let decoded: WithAuth<T> = json_body(&parts, body, services.config.max_request_bytes).await?;
    services
        .reauthenticate(UiaOperation::ManageWallets, user_id, decoded.auth.as_ref())
        .await?;
    Ok(decoded.body)
}

#[derive(Deserialize)]
struct LinkBody {
    message: String,
    signature: String,
}

/// # `POST /_matrix/client/unstable/io.matrixon/wallets`
async fn link_wallet(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    request: Request,
) -> Result<Json<Value>> {
    let body: LinkBody = reauthenticated(&services, &session.user_id, request).await?;
    let address = services
        .link_wallet(&session.user_id, &body.message, &body.signature)
        .await?;
    Ok(Json(json!({ "address": address })))
}

/// # `DELETE /_matrix/client/unstable/io.matrixon/wallets/{address}`
async fn unlink_wallet(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    Path(address): Path<String>,
    request: Request,
) -> Result<Json<Value>> {
    let serde::de::IgnoredAny = reauthenticated(&services, &session.user_id, request).await?;
    services.unlink_wallet(&session.user_id, &address).await?;
    Ok(Json(json!({})))
}
