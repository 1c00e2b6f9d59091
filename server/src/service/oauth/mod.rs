//! The Matrix OAuth 2.0 API (spec v1.15), built into the server: clients register
//! themselves, users sign in on the server's own authorize page (password or wallet) and
//! approve the client, and the client exchanges the code (PKCE, S256 only) for a session
//! whose refresh tokens rotate. Sessions are ordinary devices with ordinary tokens.

use std::time::Duration;

use base64::Engine;
use ruma::{OwnedDeviceId, UserId};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

pub mod clients;
pub mod device;

pub use clients::OAuthClient;

use super::{Services, secrets};
use crate::store::oauth::OAuthCode;

/// The device authorization grant's type (RFC 8628).
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// How long an authorization code can be exchanged.
const CODE_LIFETIME: Duration = Duration::from_secs(600);
/// How long a sign-in on the authorize page lasts in that browser.
pub const BROWSER_SESSION_LIFETIME: Duration = Duration::from_secs(3600);
/// How long a spent refresh token is remembered (a replay within it ends the session).
const SPENT_REFRESH_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// A spent refresh token presented again this soon is taken for a lost answer, not a theft.
const REPLAY_GRACE_MS: i64 = 30_000;

/// The API scope: full access to the account (stable and MSC2967 spellings).
const API_SCOPES: [&str; 2] = [
    "urn:matrix:client:api:*",
    "urn:matrix:org.matrix.msc2967.client:api:*",
];
/// The device scope's prefixes (stable and MSC2967 spellings).
const DEVICE_SCOPES: [&str; 2] = [
    "urn:matrix:client:device:",
    "urn:matrix:org.matrix.msc2967.client:device:",
];

/// An OAuth error (RFC 6749 §5.2): `{"error", "error_description"}`.
#[derive(Debug, Clone)]
pub struct OAuthError {
    /// The error code (`invalid_request`, `invalid_grant`, …).
    pub error: &'static str,
    /// What was wrong, for the developer.
    pub description: String,
}

impl OAuthError {
    /// An error with its code and description.
    pub fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            error,
            description: description.into(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": self.error, "error_description": self.description})
    }
}

/// A failure inside the server (database, hashing) while answering an OAuth request.
impl From<crate::http::error::Error> for OAuthError {
    fn from(error: crate::http::error::Error) -> Self {
        match error {
            crate::http::error::Error::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "OAuth request failed");
                Self::new("server_error", "the server failed; try again")
            }
            other => Self::new("invalid_request", other.to_string()),
        }
    }
}

impl From<sqlx::Error> for OAuthError {
    fn from(error: sqlx::Error) -> Self {
        crate::http::error::Error::from(error).into()
    }
}

/// What an authorize request asks for, checked.
#[derive(Clone, Debug)]
pub struct AuthorizeRequest {
    /// The client, as registered.
    pub client_id: String,
    /// Its registration.
    pub client: OAuthClient,
    /// One of its registered redirect URIs.
    pub redirect_uri: String,
    /// The scope to grant, with the device scope it names (one is added when it names none).
    pub scope: String,
    /// The device the session will be.
    pub device_id: OwnedDeviceId,
    /// Echoed back to the client.
    pub state: Option<String>,
    /// PKCE challenge (S256).
    pub code_challenge: String,
    /// `query` (default) or `fragment`.
    pub fragment: bool,
    /// `prompt=create`: the page opens on registration.
    pub create: bool,
    /// A Matrix ID or `0x…` address to pre-select.
    pub login_hint: Option<String>,
}

/// Why an authorize request cannot go on, shown on the page. The browser is never sent to
/// the client with an error before the user has done anything: anyone can register a client,
/// so that would make the server an open redirect (RFC 9700 §4.11.2).
#[derive(Debug)]
pub enum AuthorizeError {
    /// Shown on the page.
    Show(String),
}

/// The scope's device, when it names one (stable or unstable spelling).
fn scope_device(scope: &str) -> Result<Option<String>, OAuthError> {
    let mut device = None;
    for token in scope.split(' ').filter(|t| !t.is_empty()) {
        if let Some(id) = DEVICE_SCOPES.iter().find_map(|p| token.strip_prefix(p)) {
            if device.is_some() {
                return Err(OAuthError::new(
                    "invalid_scope",
                    "more than one device scope",
                ));
            }
            // Scope tokens may hold any of these (RFC 6749 §3.3 allows more): matrix-sdk's
            // QR login names a device by its Curve25519 key in base64, with '+' and '/'.
            let valid = !id.is_empty()
                && id.len() <= 255
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b));
            if !valid {
                return Err(OAuthError::new(
                    "invalid_scope",
                    "a device ID is 1 to 255 letters, digits and -._~!$&'()*+,;=:@/",
                ));
            }
            device = Some(id.to_owned());
        } else if !API_SCOPES.contains(&token) && token != "openid" {
            return Err(OAuthError::new(
                "invalid_scope",
                format!("unknown scope {token}"),
            ));
        }
    }
    Ok(device)
}

/// base64url(SHA-256(verifier)), as PKCE's S256 method computes the challenge.
fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `value` could be a PKCE verifier or challenge (RFC 7636: 43 to 128 unreserved).
fn pkce_shaped(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Whether a token a client presents is worth a database lookup.
fn token_shaped(value: &str) -> bool {
    !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic())
}

/// Where the browser goes to give the client its answer: the redirect URI with the
/// parameters in its query or fragment.
pub fn redirect_with(redirect_uri: &str, fragment: bool, params: &[(&str, &str)]) -> String {
    let Ok(mut url) = Url::parse(redirect_uri) else {
        return redirect_uri.to_owned();
    };
    let encoded: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().copied())
        .finish();
    if fragment {
        url.set_fragment(Some(&encoded));
    } else {
        url.query_pairs_mut().extend_pairs(params.iter().copied());
    }
    url.into()
}

/// The answer of the token endpoint.
pub struct Tokens {
    /// The new access token.
    pub access_token: String,
    /// The new refresh token.
    pub refresh_token: Option<String>,
    /// Seconds until the access token expires.
    pub expires_in: Option<u64>,
    /// The scope granted.
    pub scope: String,
}

impl Tokens {
    /// The JSON body (RFC 6749 §5.1).
    pub fn body(&self) -> Value {
        let mut body = json!({
            "access_token": self.access_token,
            "token_type": "Bearer",
            "scope": self.scope,
        });
        if let Some(refresh) = &self.refresh_token {
            body["refresh_token"] = json!(refresh);
        }
        if let Some(expires_in) = self.expires_in {
            body["expires_in"] = json!(expires_in);
        }
        body
    }
}

impl Services {
    /// Registers a client: its id and the registration as accepted (RFC 7591 §3.2.1).
    pub async fn register_oauth_client(&self, body: &Value) -> Result<Value, OAuthError> {
        let client = clients::validate(body)?;
        let client_id = secrets::random_alphanumeric(26);
        let metadata = serde_json::to_string(&client)
            .map_err(|e| OAuthError::new("server_error", e.to_string()))?;
        self.store
            .insert_oauth_client(&client_id, &metadata, self.now_ms())
            .await?;
        let mut answer = serde_json::to_value(&client)
            .map_err(|e| OAuthError::new("server_error", e.to_string()))?;
        if let Some(map) = answer.as_object_mut() {
            map.retain(|_, v| !v.is_null());
            map.insert("client_id".to_owned(), json!(client_id));
            map.insert(
                "client_id_issued_at".to_owned(),
                json!(self.now_ms() / 1000),
            );
            map.insert("token_endpoint_auth_method".to_owned(), json!("none"));
            map.insert("response_types".to_owned(), json!(["code"]));
        }
        Ok(answer)
    }

    /// A registered client.
    pub async fn oauth_client(&self, client_id: &str) -> Result<Option<OAuthClient>, OAuthError> {
        if !secrets::is_token_shaped(client_id) {
            return Ok(None);
        }
        Ok(self
            .store
            .oauth_client(client_id)
            .await?
            .and_then(|m| serde_json::from_str(&m).ok()))
    }

    /// Checks an authorize request's parameters (as the query string gives them).
    pub async fn authorize_request(&self, query: &str) -> Result<AuthorizeRequest, AuthorizeError> {
        let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let get = |key: &str| {
            let mut values = params
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str());
            match (values.next(), values.next()) {
                (Some(v), None) => Ok(Some(v.to_owned())),
                (None, _) => Ok(None),
                (Some(_), Some(_)) => Err(key.to_owned()),
            }
        };
        let show = |m: &str| AuthorizeError::Show(m.to_owned());
        let client_id = get("client_id")
            .map_err(|_| show("client_id appears twice"))?
            .ok_or_else(|| show("The request names no client (client_id)."))?;
        let client = self
            .oauth_client(&client_id)
            .await
            .map_err(|e| AuthorizeError::Show(e.description))?
            .ok_or_else(|| show("This app is not registered with this server."))?;
        let redirect_uri = get("redirect_uri")
            .map_err(|_| show("redirect_uri appears twice"))?
            .filter(|uri| client.redirect_uris.contains(uri))
            .ok_or_else(|| {
                show("The app asked to be answered at an address it did not register.")
            })?;
        let state = get("state").map_err(|_| show("state appears twice"))?;
        let fragment = get("response_mode").ok().flatten().as_deref() == Some("fragment");
        let refuse = |error: &str, description: &str| {
            AuthorizeError::Show(format!(
                "The app's request cannot be answered: {description} ({error})."
            ))
        };
        let single = |key: &str| {
            get(key).map_err(|k| refuse("invalid_request", &format!("{k} appears twice")))
        };
        match single("response_mode")?.as_deref() {
            None | Some("query" | "fragment") => {}
            Some(_) => {
                return Err(refuse(
                    "invalid_request",
                    "response_mode must be query or fragment",
                ));
            }
        }
        if single("response_type")?.as_deref() != Some("code") {
            return Err(refuse(
                "unsupported_response_type",
                "response_type must be code",
            ));
        }
        if !client.grant_types.iter().any(|g| g == "authorization_code") {
            return Err(refuse(
                "unauthorized_client",
                "this client did not register the authorization code grant",
            ));
        }
        if single("code_challenge_method")?.as_deref() != Some("S256") {
            return Err(refuse(
                "invalid_request",
                "PKCE with code_challenge_method S256 is required",
            ));
        }
        let code_challenge = single("code_challenge")?
            .filter(|c| pkce_shaped(c))
            .ok_or_else(|| {
                refuse(
                    "invalid_request",
                    "code_challenge must be 43 to 128 characters",
                )
            })?;
        let scope = single("scope")?.unwrap_or_default();
        let device = scope_device(&scope).map_err(|e| refuse(e.error, &e.description))?;
        if !scope.split(' ').any(|s| API_SCOPES.contains(&s)) {
            return Err(refuse(
                "invalid_scope",
                "the scope must include urn:matrix:client:api:*",
            ));
        }
        let (scope, device_id) = match device {
            Some(id) => (scope, OwnedDeviceId::from(id)),
            None => {
                let id = secrets::new_device_id();
                let prefix = if scope.contains("org.matrix.msc2967") {
                    DEVICE_SCOPES[1]
                } else {
                    DEVICE_SCOPES[0]
                };
                (format!("{scope} {prefix}{id}"), id)
            }
        };
        let prompt = single("prompt")?.unwrap_or_default();
        // The consent screen is always shown; a fresh sign-in (`login`) is not offered.
        if prompt
            .split(' ')
            .any(|p| !matches!(p, "" | "create" | "consent"))
        {
            return Err(refuse("invalid_request", "prompt may be create or consent"));
        }
        let login_hint = single("login_hint")?.filter(|h| h.len() <= 255);
        let create = prompt.split(' ').any(|p| p == "create");
        Ok(AuthorizeRequest {
            client_id,
            client,
            redirect_uri: redirect_uri.clone(),
            scope,
            device_id,
            state: state.clone(),
            code_challenge,
            fragment,
            create,
            login_hint,
        })
    }

    /// The user approved: a code for the client, and where the browser takes it.
    pub async fn approve_authorization(
        &self,
        request: &AuthorizeRequest,
        user_id: &UserId,
    ) -> Result<String, OAuthError> {
        self.check_device_free(user_id, request.device_id.as_str(), &request.client_id)
            .await?;
        let code = secrets::random_alphanumeric(40);
        let lifetime = i64::try_from(CODE_LIFETIME.as_millis()).unwrap_or(i64::MAX);
        self.store
            .insert_oauth_code(
                &secrets::hash_token(&code),
                &OAuthCode {
                    client_id: request.client_id.clone(),
                    user_id: user_id.to_string(),
                    device_id: request.device_id.to_string(),
                    scope: request.scope.clone(),
                    redirect_uri: request.redirect_uri.clone(),
                    code_challenge: request.code_challenge.clone(),
                    expires_ms: self.now_ms().saturating_add(lifetime),
                },
            )
            .await?;
        let mut params = vec![("code", code.as_str())];
        if let Some(state) = &request.state {
            params.push(("state", state.as_str()));
        }
        Ok(redirect_with(
            &request.redirect_uri,
            request.fragment,
            &params,
        ))
    }

    /// A client may name a device that is new, or one of its own sessions: never one of the
    /// user's other devices (it would take over that device's place and messages).
    pub async fn check_device_free(
        &self,
        user_id: &UserId,
        device_id: &str,
        client_id: &str,
    ) -> Result<(), OAuthError> {
        let device = OwnedDeviceId::from(device_id);
        if self.store.device(user_id, &device).await?.is_none() {
            return Ok(());
        }
        match self
            .store
            .oauth_session(user_id.as_str(), device_id)
            .await?
        {
            Some((owner, _)) if owner == client_id => Ok(()),
            _ => Err(OAuthError::new(
                "invalid_request",
                format!("device {device_id} is another session of this account"),
            )),
        }
    }

    /// The user declined: where the browser tells the client so.
    pub fn deny_authorization(&self, request: &AuthorizeRequest) -> String {
        let mut params = vec![
            ("error", "access_denied"),
            ("error_description", "the user declined"),
        ];
        if let Some(state) = &request.state {
            params.push(("state", state.as_str()));
        }
        redirect_with(&request.redirect_uri, request.fragment, &params)
    }

    /// The token endpoint (RFC 6749 §3.2), for the grants this server has.
    pub async fn oauth_token(&self, form: &[(String, String)]) -> Result<Tokens, OAuthError> {
        let get = |key: &str| {
            form.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| OAuthError::new("invalid_request", format!("{key} is missing")))
        };
        let client_id = get("client_id")?;
        let client = self
            .oauth_client(client_id)
            .await?
            .ok_or_else(|| OAuthError::new("invalid_client", "unknown client"))?;
        let grant = get("grant_type")?;
        if !["authorization_code", "refresh_token", DEVICE_CODE_GRANT].contains(&grant) {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                format!("{grant} is not a grant of this server"),
            ));
        }
        if !client.grant_types.iter().any(|g| g == grant) {
            return Err(OAuthError::new(
                "unauthorized_client",
                format!("this client did not register the {grant} grant"),
            ));
        }
        match grant {
            "authorization_code" => {
                let code = get("code")?;
                let verifier = get("code_verifier")?;
                let redirect_uri = get("redirect_uri")?;
                let bad =
                    || OAuthError::new("invalid_grant", "the code is unknown, used or expired");
                if !token_shaped(code) {
                    return Err(bad());
                }
                let grant = self
                    .store
                    .take_oauth_code(&secrets::hash_token(code))
                    .await?
                    .ok_or_else(bad)?;
                if grant.expires_ms <= self.now_ms()
                    || grant.client_id != client_id
                    || grant.redirect_uri != redirect_uri
                {
                    return Err(bad());
                }
                if !pkce_shaped(verifier) || s256(verifier) != grant.code_challenge {
                    return Err(OAuthError::new(
                        "invalid_grant",
                        "the code_verifier does not match",
                    ));
                }
                let user_id = UserId::parse(grant.user_id.as_str())
                    .map_err(|_| OAuthError::new("server_error", "a stored user ID is invalid"))?;
                self.ensure_active(&user_id)
                    .await
                    .map_err(|_| OAuthError::new("invalid_grant", "the account is not active"))?;
                self.issue_oauth_session(
                    &user_id,
                    grant.device_id.into(),
                    (client_id, &client),
                    &grant.scope,
                )
                .await
            }
            "refresh_token" => self.refresh_oauth(client_id, get("refresh_token")?).await,
            DEVICE_CODE_GRANT => {
                self.poll_device_grant((client_id, &client), get("device_code")?)
                    .await
            }
            other => Err(OAuthError::new(
                "unsupported_grant_type",
                format!("{other} is not a grant of this server"),
            )),
        }
    }

    /// Whether a refresh token belongs to a session issued through OAuth (those refresh at
    /// the token endpoint only, where replays are caught).
    pub async fn is_oauth_refresh_token(&self, token: &str) -> Result<bool, OAuthError> {
        if !token_shaped(token) {
            return Ok(false);
        }
        let hash = secrets::hash_token(token);
        let session = match self.store.refresh_token_session(&hash).await? {
            Some(session) => Some(session),
            None => self.store.spent_refresh_token(&hash).await?,
        };
        Ok(match session {
            Some((user, device)) => self.store.oauth_session(&user, &device).await?.is_some(),
            None => false,
        })
    }

    /// A new session on `device_id` for the client (the device's earlier tokens stop working).
    async fn issue_oauth_session(
        &self,
        user_id: &UserId,
        device_id: OwnedDeviceId,
        (client_id, client): (&str, &OAuthClient),
        scope: &str,
    ) -> Result<Tokens, OAuthError> {
        self.check_device_free(user_id, device_id.as_str(), client_id)
            .await
            .map_err(|e| OAuthError::new("invalid_grant", e.description))?;
        let name = client.display_name();
        // Refresh tokens only for clients that registered the grant (others could not use them).
        let refreshable = client.grant_types.iter().any(|g| g == "refresh_token");
        let issued = self
            .start_session(user_id, Some(device_id.clone()), Some(&name), refreshable)
            .await?;
        self.store
            .set_oauth_session((user_id.as_str(), device_id.as_str()), client_id, scope)
            .await?;
        Ok(Tokens {
            access_token: issued.access_token,
            refresh_token: issued.refresh_token,
            expires_in: issued.expires_in.map(|d| d.as_secs()),
            scope: scope.to_owned(),
        })
    }

    /// Rotates a refresh token; presenting one that was already exchanged ends its session
    /// (someone else has it: RFC 6819 §5.2.2.3).
    async fn refresh_oauth(&self, client_id: &str, token: &str) -> Result<Tokens, OAuthError> {
        let bad = || OAuthError::new("invalid_grant", "the refresh token is unknown or revoked");
        if !token_shaped(token) {
            return Err(bad());
        }
        let hash = secrets::hash_token(token);
        let Some((user, device)) = self.store.refresh_token_session(&hash).await? else {
            if let Some((user, device, spent_ms)) = self.store.spent_refresh_token_at(&hash).await?
                && let Ok(user_id) = UserId::parse(user.as_str())
            {
                // A retry right after the rotation is a client whose answer was lost, not a
                // thief: refused (it signs in again) but the session and its keys stay.
                if self.now_ms().saturating_sub(spent_ms) > REPLAY_GRACE_MS {
                    tracing::warn!(%user_id, device, "a spent refresh token was replayed: session ended");
                    self.end_session(&user_id, &device).await?;
                }
            }
            return Err(bad());
        };
        let Some((owner, scope)) = self.store.oauth_session(&user, &device).await? else {
            return Err(bad());
        };
        if owner != client_id {
            return Err(bad());
        }
        let issued = self.refresh(token).await.map_err(|_| bad())?;
        let retention = i64::try_from(SPENT_REFRESH_RETENTION.as_millis()).unwrap_or(i64::MAX);
        self.store
            .spend_refresh_token(&hash, (&user, &device), (self.now_ms(), retention))
            .await?;
        Ok(Tokens {
            access_token: issued.access_token,
            refresh_token: issued.refresh_token,
            expires_in: issued.expires_in.map(|d| d.as_secs()),
            scope,
        })
    }

    /// RFC 7009: revoking the access or the refresh token ends the session and its device.
    /// Unknown tokens are not an error (the client's goal is reached either way).
    pub async fn revoke_oauth_token(&self, client_id: &str, token: &str) -> Result<(), OAuthError> {
        if !token_shaped(token) {
            return Ok(());
        }
        let hash = secrets::hash_token(token);
        let session = match self.store.access_token(&hash).await? {
            Some(row) => Some((row.user_id.to_string(), row.device_id.to_string())),
            None => self.store.refresh_token_session(&hash).await?,
        };
        let Some((user, device)) = session else {
            return Ok(());
        };
        // Only the client the session was issued to may end it this way.
        match self.store.oauth_session(&user, &device).await? {
            Some((owner, _)) if owner == client_id => {}
            // Ended meanwhile (a client revoking its access and refresh tokens at once, as
            // matrix-js-sdk's `logout` does): revoked already, which is what was asked.
            None if match UserId::parse(user.as_str()) {
                Ok(user_id) => self
                    .store
                    .device(&user_id, device.as_str().into())
                    .await?
                    .is_none(),
                Err(_) => false,
            } =>
            {
                return Ok(());
            }
            _ => {
                return Err(OAuthError::new(
                    "unauthorized_client",
                    "this token was not issued to this client",
                ));
            }
        }
        if let Ok(user_id) = UserId::parse(user.as_str()) {
            self.end_session(&user_id, &device).await?;
        }
        Ok(())
    }

    /// Logs a device out: its tokens, its keys and its place in the user's device list go.
    async fn end_session(&self, user_id: &UserId, device: &str) -> Result<(), OAuthError> {
        self.store
            .delete_devices(user_id, &[OwnedDeviceId::from(device)])
            .await?;
        self.wake_device_watchers(user_id).await?;
        Ok(())
    }

    /// Signs a browser in on the authorize page: the cookie value that proves it.
    pub async fn sign_in_browser(&self, user_id: &UserId) -> Result<String, OAuthError> {
        let secret = secrets::random_alphanumeric(40);
        let lifetime = i64::try_from(BROWSER_SESSION_LIFETIME.as_millis()).unwrap_or(i64::MAX);
        self.store
            .insert_oauth_browser_session(
                &secrets::hash_token(&secret),
                user_id.as_str(),
                self.now_ms().saturating_add(lifetime),
            )
            .await?;
        Ok(secret)
    }

    /// The user a browser's cookie says it signed in as, and when it signed in (the account
    /// page asks for a recent sign-in before it deactivates an account).
    pub async fn browser_user(
        &self,
        cookie: &str,
    ) -> Result<Option<(ruma::OwnedUserId, i64)>, OAuthError> {
        if !secrets::is_token_shaped(cookie) {
            return Ok(None);
        }
        let user = self
            .store
            .oauth_browser_user(&secrets::hash_token(cookie), self.now_ms())
            .await?;
        let Some((user_id, expires)) = user.and_then(|(u, e)| Some((UserId::parse(u).ok()?, e)))
        else {
            return Ok(None);
        };
        let lifetime = i64::try_from(BROWSER_SESSION_LIFETIME.as_millis()).unwrap_or(i64::MAX);
        Ok(self
            .ensure_active(&user_id)
            .await
            .is_ok()
            .then_some((user_id, expires.saturating_sub(lifetime))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636() {
        // RFC 7636 appendix B.
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(!pkce_shaped("short"));
        assert!(!pkce_shaped(&"a".repeat(129)));
        assert!(!pkce_shaped(&format!("{}+", "a".repeat(50))));
    }

    #[test]
    fn scopes_name_at_most_one_valid_device() {
        assert_eq!(
            scope_device("urn:matrix:client:api:* urn:matrix:client:device:ABCDEF")
                .expect("accepted"),
            Some("ABCDEF".to_owned())
        );
        assert_eq!(
            scope_device("urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:x.y")
                .expect("accepted"),
            Some("x.y".to_owned())
        );
        assert_eq!(
            scope_device("urn:matrix:client:api:*").expect("accepted"),
            None
        );
        assert!(scope_device("urn:matrix:client:device:A urn:matrix:client:device:B").is_err());
        // matrix-sdk's QR login: the device's Curve25519 key, base64 with '+' and '/'.
        assert_eq!(
            scope_device("urn:matrix:client:device:q+7Rx/Lz0aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456")
                .expect("accepted")
                .as_deref(),
            Some("q+7Rx/Lz0aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456")
        );
        for bad in ["a\"b", "a\\b", "a<b", "é", "a%2Fb"] {
            assert!(
                scope_device(&format!("urn:matrix:client:device:{bad}")).is_err(),
                "{bad}"
            );
        }
        assert!(scope_device("urn:matrix:client:device:").is_err());
        assert!(scope_device("admin").is_err());
    }

    #[test]
    fn answers_go_in_the_query_or_the_fragment() {
        assert_eq!(
            redirect_with(
                "https://a.example/cb?x=1",
                false,
                &[("code", "c d"), ("state", "s")]
            ),
            "https://a.example/cb?x=1&code=c+d&state=s"
        );
        assert_eq!(
            redirect_with("com.example.app:/cb", true, &[("code", "c")]),
            "com.example.app:/cb#code=c"
        );
    }
}
