//! The device authorization grant (RFC 8628, MSC4341): a device without a browser (a TV, a
//! headless agent) shows a short code; the user approves it on the device page, signed in
//! with a password or a wallet; the device polls the token endpoint until then.

use std::time::Duration;

use rand::Rng;
use ruma::UserId;
use serde_json::{Value, json};

use super::{
    API_SCOPES, DEVICE_CODE_GRANT, DEVICE_SCOPES, OAuthClient, OAuthError, Tokens, scope_device,
    token_shaped,
};
use crate::{
    service::{Services, secrets},
    store::oauth::DeviceGrant,
};

/// How long a device code can be approved and polled for.
const LIFETIME: Duration = Duration::from_secs(600);
/// The least time between two polls (RFC 8628 §3.5: faster polls get `slow_down`).
const INTERVAL: Duration = Duration::from_secs(5);
/// User codes use letters that cannot be mistaken for each other or spell much.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// A user code as shown: `XXXX-XXXX`.
fn new_user_code() -> String {
    let mut rng = rand::rngs::OsRng;
    let letters: String = (0..8)
        .map(|_| char::from(USER_CODE_ALPHABET[rng.gen_range(0..USER_CODE_ALPHABET.len())]))
        .collect();
    format!("{}-{}", &letters[..4], &letters[4..])
}

/// A user code as typed (any case, spaces or no dash) in its shown form, if it could be one.
pub fn normalize_user_code(typed: &str) -> Option<String> {
    let letters: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (letters.len() == 8 && letters.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)))
        .then(|| format!("{}-{}", &letters[..4], &letters[4..]))
}

impl Services {
    /// `POST /oauth2/device`: a device code for the device to poll with and a user code for
    /// the user to approve.
    pub async fn start_device_grant(
        &self,
        client_id: &str,
        scope: &str,
    ) -> Result<Value, OAuthError> {
        let client = self
            .oauth_client(client_id)
            .await?
            .ok_or_else(|| OAuthError::new("invalid_client", "unknown client"))?;
        if !client.grant_types.iter().any(|g| g == DEVICE_CODE_GRANT) {
            return Err(OAuthError::new(
                "unauthorized_client",
                "this client did not register the device authorization grant",
            ));
        }
        if !scope.split(' ').any(|s| API_SCOPES.contains(&s)) {
            return Err(OAuthError::new(
                "invalid_scope",
                "the scope must include urn:matrix:client:api:*",
            ));
        }
        let (scope, device_id) = match scope_device(scope)? {
            Some(id) => (scope.to_owned(), id),
            None => {
                let id = secrets::new_device_id().to_string();
                (format!("{scope} {}{id}", DEVICE_SCOPES[0]), id)
            }
        };
        let device_code = secrets::random_alphanumeric(40);
        let user_code = new_user_code();
        let now = self.now_ms();
        let lifetime = i64::try_from(LIFETIME.as_millis()).unwrap_or(i64::MAX);
        self.store
            .insert_device_grant(
                &secrets::hash_token(&device_code),
                &DeviceGrant {
                    user_code: user_code.clone(),
                    client_id: client_id.to_owned(),
                    scope,
                    device_id,
                    status: "pending".to_owned(),
                    user_id: None,
                    last_poll_ms: 0,
                    expires_ms: now.saturating_add(lifetime),
                },
            )
            .await?;
        let page = format!(
            "{}{}/device",
            self.config.public_baseurl().trim_end_matches('/'),
            crate::api::oauth::PREFIX
        );
        Ok(json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": page,
            "verification_uri_complete": format!("{page}?user_code={user_code}"),
            "expires_in": LIFETIME.as_secs(),
            "interval": INTERVAL.as_secs(),
        }))
    }

    /// A pending grant the device page may show, with its client.
    pub async fn pending_device_grant(
        &self,
        user_code: &str,
    ) -> Result<Option<(DeviceGrant, OAuthClient)>, OAuthError> {
        let Some(code) = normalize_user_code(user_code) else {
            return Ok(None);
        };
        let Some(grant) = self
            .store
            .device_grant_by_user_code(&code, self.now_ms())
            .await?
            .filter(|g| g.status == "pending")
        else {
            return Ok(None);
        };
        let Some(client) = self.oauth_client(&grant.client_id).await? else {
            return Ok(None);
        };
        Ok(Some((grant, client)))
    }

    /// The user approved or denied the device; false when it was no longer pending.
    pub async fn decide_device_grant(
        &self,
        user_code: &str,
        user_id: &UserId,
        allow: bool,
    ) -> Result<bool, OAuthError> {
        let status = if allow { "approved" } else { "denied" };
        Ok(self
            .store
            .decide_device_grant(user_code, status, user_id.as_str(), self.now_ms())
            .await?)
    }

    /// The token endpoint's device code grant: pending, too fast, denied, expired, or the
    /// session (once).
    pub(super) async fn poll_device_grant(
        &self,
        (client_id, client): (&str, &OAuthClient),
        device_code: &str,
    ) -> Result<Tokens, OAuthError> {
        let unknown = || OAuthError::new("invalid_grant", "the device code is unknown or used");
        if !token_shaped(device_code) {
            return Err(unknown());
        }
        let now = self.now_ms();
        let grant = self
            .store
            .poll_device_grant(&secrets::hash_token(device_code), now)
            .await?
            .ok_or_else(unknown)?;
        if grant.client_id != client_id {
            return Err(unknown());
        }
        if grant.expires_ms <= now {
            return Err(OAuthError::new(
                "expired_token",
                "the device code expired: start again",
            ));
        }
        match grant.status.as_str() {
            "pending" => {
                let interval = i64::try_from(INTERVAL.as_millis()).unwrap_or(i64::MAX);
                if now.saturating_sub(grant.last_poll_ms) < interval {
                    Err(OAuthError::new("slow_down", "poll at most every 5 seconds"))
                } else {
                    Err(OAuthError::new(
                        "authorization_pending",
                        "the user has not answered yet",
                    ))
                }
            }
            "approved" => {
                let user_id = grant
                    .user_id
                    .as_deref()
                    .and_then(|u| UserId::parse(u).ok())
                    .ok_or_else(|| {
                        OAuthError::new("server_error", "an approved grant names no user")
                    })?;
                self.ensure_active(&user_id)
                    .await
                    .map_err(|_| OAuthError::new("invalid_grant", "the account is not active"))?;
                self.issue_oauth_session(
                    &user_id,
                    grant.device_id.into(),
                    (client_id, client),
                    &grant.scope,
                )
                .await
            }
            _ => Err(OAuthError::new("access_denied", "the user declined")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_read_as_typed() {
        let code = new_user_code();
        assert_eq!(normalize_user_code(&code).as_deref(), Some(code.as_str()));
        assert_eq!(
            normalize_user_code(&code.to_lowercase().replace('-', " ")).as_deref(),
            Some(code.as_str())
        );
        assert_eq!(normalize_user_code("BCDF-GHJ"), None);
        assert_eq!(
            normalize_user_code("BCDF-GHJA"),
            None,
            "A is not in the alphabet"
        );
        assert_eq!(normalize_user_code("' OR 1=1"), None);
    }
}
