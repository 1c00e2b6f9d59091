//! What widgets and settings pages ask about identities outside Matrix: OpenID tokens
//! (Element Call, Jitsi and integration managers prove who the user is with them), the
//! user's third-party ids on identity servers (binding and unbinding; this server keeps no
//! addresses of its own, since it sends no e-mail or SMS) and third-party protocols (no
//! bridges announce any here).

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{StatusCode, Uri},
    routing::{get, post},
};
use ruma::api::error::ErrorKind;
use serde_json::{Value, json};

use crate::{
    http::{
        auth::Authenticated,
        error::{Error, Result},
        ruma::{JsonBody, query_params},
    },
    service::{Limit, Services, identity::ThreePid, secrets},
};

/// How long an OpenID token can be exchanged for the user's id (as Synapse).
const OPENID_LIFETIME: Duration = Duration::from_secs(3600);

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = ["r0", "v3"].iter().fold(router, |router, version| {
        let prefix = format!("/_matrix/client/{version}");
        router
            .route(
                &format!("{prefix}/user/{{user_id}}/openid/request_token"),
                post(request_openid_token),
            )
            .route(
                &format!("{prefix}/account/3pid"),
                get(threepids).post(refuse_threepid),
            )
            .route(&format!("{prefix}/account/3pid/add"), post(refuse_threepid))
            .route(&format!("{prefix}/account/3pid/bind"), post(bind))
            .route(
                &format!("{prefix}/account/3pid/email/requestToken"),
                post(refuse_threepid),
            )
            .route(
                &format!("{prefix}/account/3pid/msisdn/requestToken"),
                post(refuse_threepid),
            )
            .route(&format!("{prefix}/account/3pid/delete"), post(unbind))
            .route(&format!("{prefix}/account/3pid/unbind"), post(unbind))
            .route(&format!("{prefix}/thirdparty/protocols"), get(protocols))
    });
    // Where bind and unbind lived before v1.1 (SyTest still calls them there).
    router
        .route("/_matrix/client/unstable/account/3pid/bind", post(bind))
        .route("/_matrix/client/unstable/account/3pid/unbind", post(unbind))
        .route(
            "/_matrix/federation/v1/openid/userinfo",
            get(openid_userinfo),
        )
}

/// # `POST /_matrix/client/v3/user/{userId}/openid/request_token`
async fn request_openid_token(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    let user_id = super::path_user_id(&user_id)?;
    if user_id != session.user_id {
        return Err(Error::forbidden(
            "You can only request OpenID tokens for yourself",
        ));
    }
    let token = secrets::random_alphanumeric(40);
    let lifetime_ms = i64::try_from(OPENID_LIFETIME.as_millis()).unwrap_or(i64::MAX);
    services
        .store
        .insert_openid_token(
            &secrets::hash_token(&token),
            user_id.as_str(),
            services.now_ms().saturating_add(lifetime_ms),
        )
        .await?;
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "matrix_server_name": services.config.server_name,
        "expires_in": OPENID_LIFETIME.as_secs(),
    })))
}

/// # `GET /_matrix/federation/v1/openid/userinfo?access_token=…`
///
/// Unauthenticated by design: holding the token is the proof.
async fn openid_userinfo(State(services): State<Arc<Services>>, uri: Uri) -> Result<Json<Value>> {
    let params = query_params(uri.query());
    let unknown = || Error::unknown_token(false);
    let token = params.get("access_token").ok_or_else(unknown)?;
    if !secrets::is_token_shaped(token) {
        return Err(unknown());
    }
    let user = services
        .store
        .openid_user(&secrets::hash_token(token), services.now_ms())
        .await?
        .ok_or_else(unknown)?;
    Ok(Json(json!({ "sub": user })))
}

/// # `GET /_matrix/client/v3/account/3pid`
async fn threepids(Authenticated(_): Authenticated) -> Json<Value> {
    Json(json!({ "threepids": [] }))
}

/// # `POST /_matrix/client/v3/account/3pid/add` (and `…/requestToken`)
async fn refuse_threepid(Authenticated(_): Authenticated) -> Error {
    Error::new(
        StatusCode::FORBIDDEN,
        ErrorKind::ThreepidDenied,
        "E-mail addresses and phone numbers cannot be added to accounts here (this server \
         sends no e-mail or SMS); validate one with an identity server and bind it there \
         with /account/3pid/bind",
    )
}

/// A required string field of a request body.
fn field<'a>(body: &'a Value, name: &str) -> Result<&'a str> {
    match body.get(name) {
        Some(Value::String(value)) => Ok(value),
        None | Some(Value::Null) => Err(Error::missing_param(format!("{name} is required"))),
        Some(_) => Err(Error::invalid_param(format!("{name} must be a string"))),
    }
}

/// # `POST /_matrix/client/v3/account/3pid/bind`
///
/// Binds an address the identity server validated (session `sid`) to the user there.
async fn bind(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>> {
    let (id_server, token) = (field(&body, "id_server")?, field(&body, "id_access_token")?);
    let (sid, secret) = (field(&body, "sid")?, field(&body, "client_secret")?);
    services.rate_limit(Limit::LookupsPerUser, session.user_id.as_str())?;
    services
        .identity_bind(&session.user_id, id_server, token, sid, secret)
        .await?;
    Ok(Json(json!({})))
}

/// # `POST /_matrix/client/v3/account/3pid/delete` (and `unbind`)
///
/// The account holds no addresses of its own, so both unbind: on `id_server`, or on every
/// server the address was bound on through this server.
async fn unbind(
    State(services): State<Arc<Services>>,
    Authenticated(session): Authenticated,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>> {
    let pid = ThreePid::new(field(&body, "medium")?, field(&body, "address")?)?;
    let id_server = match body.get("id_server") {
        None | Some(Value::Null) => None,
        Some(_) => Some(field(&body, "id_server")?),
    };
    services.rate_limit(Limit::LookupsPerUser, session.user_id.as_str())?;
    let done = services
        .identity_unbind(&session.user_id, id_server, &pid)
        .await?;
    Ok(Json(json!({
        "id_server_unbind_result": if done { "success" } else { "no-support" }
    })))
}

/// # `GET /_matrix/client/v3/thirdparty/protocols`
async fn protocols(Authenticated(_): Authenticated) -> Json<Value> {
    Json(json!({}))
}
