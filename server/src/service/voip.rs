//! TURN credentials in the scheme coturn checks (`use-auth-secret`): the user name is
//! `<expiry unix time>:<user id>`, the password its HMAC-SHA1 under the shared secret.

use base64::Engine;
use hmac::{Hmac, Mac};
use ruma::UserId;
use serde::Serialize;
use sha1::Sha1;

use super::Services;

/// What a client needs to use the TURN servers.
#[derive(Debug, Serialize)]
pub struct TurnCredentials {
    /// `<expiry>:<user id>`.
    pub username: String,
    /// Base64 HMAC-SHA1 of the user name.
    pub password: String,
    /// The configured URIs.
    pub uris: Vec<String>,
    /// Seconds the credentials are valid.
    pub ttl: u64,
}

/// The password coturn expects for `username` under `secret`.
pub fn turn_password(secret: &str, username: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

impl Services {
    /// Credentials valid from `now_s` for the configured TTL; `None` when TURN is not set up.
    pub fn turn_credentials(&self, user_id: &UserId, now_s: i64) -> Option<TurnCredentials> {
        let voip = &self.config.voip;
        let secret = voip.turn_shared_secret.as_deref()?;
        if voip.turn_uris.is_empty() {
            return None;
        }
        let expiry = now_s.saturating_add(i64::try_from(voip.turn_ttl_s).unwrap_or(i64::MAX));
        let username = format!("{expiry}:{user_id}");
        Some(TurnCredentials {
            password: turn_password(secret, &username),
            username,
            uris: voip.turn_uris.clone(),
            ttl: voip.turn_ttl_s,
        })
    }
}
