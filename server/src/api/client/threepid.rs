//! What widgets and settings pages ask about identities outside Matrix: OpenID tokens
//! (Element Call, Jitsi and integration managers prove who the user is with them), the
//! user's third-party ids (none: e-mail and phone need an identity server, which this
//! server does not support yet) and third-party protocols (no bridges announce any here).

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
        ruma::query_params,
    },
    service::{Services, secrets},
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
            .route(
                &format!("{prefix}/account/3pid/bind"),
                post(refuse_threepid),
            )
            .route(
                &format!("{prefix}/account/3pid/email/requestToken"),
                post(refuse_threepid),
            )
            .route(
                &format!("{prefix}/account/3pid/msisdn/requestToken"),
                post(refuse_threepid),
            )
            .route(
                &format!("{prefix}/account/3pid/delete"),
                post(nothing_bound),
            )
            .route(
                &format!("{prefix}/account/3pid/unbind"),
                post(nothing_bound),
            )
            .route(&format!("{prefix}/thirdparty/protocols"), get(protocols))
    });
    router.route(
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

/// # `POST /_matrix/client/v3/account/3pid/add` (and `bind`, `…/requestToken`)
async fn refuse_threepid(Authenticated(_): Authenticated) -> Error {
    Error::new(
        StatusCode::FORBIDDEN,
        ErrorKind::ThreepidDenied,
        "E-mail addresses and phone numbers cannot be added here: they need an identity \
         server, which this server does not support yet",
    )
}

/// # `POST /_matrix/client/v3/account/3pid/delete` (and `unbind`)
///
/// Nothing is ever bound, so there is nothing to remove.
async fn nothing_bound(Authenticated(_): Authenticated) -> Json<Value> {
    Json(json!({ "id_server_unbind_result": "no-support" }))
}

/// # `GET /_matrix/client/v3/thirdparty/protocols`
async fn protocols(Authenticated(_): Authenticated) -> Json<Value> {
    Json(json!({}))
}
