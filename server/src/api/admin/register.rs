//! Shared-secret registration, byte-for-byte as Synapse does it, so its tooling works here.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Request, State},
};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha1::Sha1;

use crate::{
    http::{
        error::{Error, Result},
        ruma::json_body,
    },
    service::{Limit, Services, secrets},
};

const NONCE_KIND: &str = "shared_secret_registration";
/// Synapse keeps these nonces for one minute.
const NONCE_LIFETIME_MS: i64 = 60_000;

fn shared_secret(services: &Services) -> Result<&str> {
    services
        .config
        .registration
        .shared_secret
        .as_deref()
        .ok_or_else(|| Error::bad_request("Shared secret registration is not enabled"))
}

/// # `GET /_synapse/admin/v1/register`
///
/// Unauthenticated and each call stores a nonce, so it shares the registration limit.
pub async fn nonce(State(services): State<Arc<Services>>, request: Request) -> Result<Json<Value>> {
    let (parts, _) = request.into_parts();
    let ip = crate::http::ruma::client_ip(&parts).unwrap_or_default();
    services.rate_limit(Limit::RegisterPerIp, &ip)?;
    shared_secret(&services)?;
    let nonce = secrets::random_alphanumeric(32);
    services
        .store
        .insert_nonce(NONCE_KIND, &nonce, services.now_ms() + NONCE_LIFETIME_MS)
        .await?;
    Ok(Json(json!({ "nonce": nonce })))
}

#[derive(Deserialize)]
struct RegisterBody {
    nonce: String,
    username: String,
    password: String,
    mac: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    displayname: Option<String>,
    #[serde(default)]
    user_type: Option<String>,
}

/// # `POST /_synapse/admin/v1/register`
pub async fn register(
    State(services): State<Arc<Services>>,
    request: Request,
) -> Result<Json<Value>> {
    let (parts, body) = request.into_parts();
    let ip = crate::http::ruma::client_ip(&parts).unwrap_or_default();
    services.rate_limit(Limit::RegisterPerIp, &ip)?;
    let secret = shared_secret(&services)?;
    let body: RegisterBody = json_body(&parts, body, services.config.max_request_bytes).await?;
    let _ = &body.displayname; // Profiles arrive with the rooms work; accepted for compatibility.

    if !services
        .store
        .take_nonce(NONCE_KIND, &body.nonce, services.now_ms())
        .await?
    {
        return Err(Error::bad_request("Unrecognised nonce"));
    }
    let expected_mac =
        hex::decode(body.mac.trim()).map_err(|_| Error::forbidden("HMAC incorrect"))?;
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes())
        .map_err(|e| Error::Internal(anyhow::anyhow!("HMAC key: {e}")))?;
    mac.update(body.nonce.as_bytes());
    mac.update(b"\x00");
    mac.update(body.username.as_bytes());
    mac.update(b"\x00");
    mac.update(body.password.as_bytes());
    mac.update(b"\x00");
    mac.update(if body.admin {
        b"admin" as &[u8]
    } else {
        b"notadmin"
    });
    if let Some(user_type) = &body.user_type {
        mac.update(b"\x00");
        mac.update(user_type.as_bytes());
    }
    mac.verify_slice(&expected_mac)
        .map_err(|_| Error::forbidden("HMAC incorrect"))?;

    let user_id = services
        .create_account(&body.username, Some(body.password), body.admin, None)
        .await?;
    let session = services.start_session(&user_id, None, None, false).await?;
    Ok(Json(json!({
        "access_token": session.access_token,
        "user_id": session.user_id,
        "home_server": services.config.server_name,
        "device_id": session.device_id,
    })))
}
