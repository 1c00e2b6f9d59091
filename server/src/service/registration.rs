//! A registration across its UIA steps: the parameters a client may send only once (with the
//! first request, as Synapse allows), and replays of a registration already completed, which
//! sign in to the account it made rather than fail (registration is idempotent on Synapse).

use ruma::{OwnedUserId, UserId, api::client::account::register};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Services, secrets};
use crate::http::error::{Error, Result};

/// What a registration asks for; the password is kept only as its hash.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RegistrationParams {
    /// The wanted user name, lower-cased (Synapse's user names are case-insensitive).
    pub username: Option<String>,
    /// The password's hash.
    pub password_hash: Option<String>,
    /// The device to create or reuse.
    pub device_id: Option<String>,
    /// The new device's name.
    pub initial_device_display_name: Option<String>,
    /// Create the account without signing in.
    pub inhibit_login: bool,
    /// Sign in with a refresh token.
    pub refresh_token: bool,
    /// The guest account to upgrade (its access token).
    pub guest_access_token: Option<String>,
}

/// Where a registration request stands.
pub enum Registration {
    /// A new or continuing registration, with its parameters.
    Pending(RegistrationParams),
    /// The session already made this account: sign in to it again.
    Replay(OwnedUserId),
}

impl Services {
    /// The parameters of this registration request: its own, or, when it carries nothing
    /// but `auth`, those remembered for its UIA session.
    pub async fn registration_request(
        &self,
        body: &register::v3::Request,
        raw_body: &[u8],
    ) -> Result<Registration> {
        let session = body.auth.as_ref().and_then(|auth| auth.session());
        let remembered = match session {
            Some(session) => {
                self.store
                    .registration_session(session, self.now_ms())
                    .await?
            }
            None => None,
        };
        if let Some((_, Some(user_id))) = &remembered {
            let user_id = UserId::parse(user_id.as_str()).map_err(|e| Error::Internal(e.into()))?;
            return Ok(Registration::Replay(user_id));
        }
        let mut fields: Map<String, Value> = serde_json::from_slice(raw_body).unwrap_or_default();
        fields.remove("auth");
        if fields.is_empty()
            && let Some((params, _)) = remembered
        {
            let params = serde_json::from_str(&params).map_err(|e| Error::Internal(e.into()))?;
            return Ok(Registration::Pending(params));
        }
        let password_hash = match &body.password {
            Some(password) => {
                Self::check_password_shape(password)?;
                Some(secrets::hash_password(password.clone()).await?)
            }
            None => None,
        };
        Ok(Registration::Pending(RegistrationParams {
            username: body.username.as_ref().map(|name| name.to_lowercase()),
            password_hash,
            device_id: body.device_id.as_ref().map(ToString::to_string),
            initial_device_display_name: body.initial_device_display_name.clone(),
            inhibit_login: body.inhibit_login,
            refresh_token: body.refresh_token,
            guest_access_token: fields
                .get("guest_access_token")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }))
    }

    /// Remembers a registration's parameters for the UIA session it was challenged with.
    pub async fn remember_registration(
        &self,
        session: &str,
        params: &RegistrationParams,
    ) -> Result<()> {
        let json = serde_json::to_string(params).map_err(|e| Error::Internal(e.into()))?;
        let now = self.now_ms();
        self.store
            .save_registration_params(session, &json, self.uia_expiry(now), now)
            .await?;
        Ok(())
    }

    /// Records the account a registration's session made.
    pub async fn registration_done(&self, session: &str, user_id: &UserId) -> Result<()> {
        let expires = self.uia_expiry(self.now_ms());
        self.store
            .registration_completed(session, user_id, expires)
            .await?;
        Ok(())
    }

    /// When a UIA session started now lapses.
    pub(super) fn uia_expiry(&self, now_ms: i64) -> i64 {
        let lifetime = i64::try_from(
            self.config
                .sessions
                .uia_session_lifetime_s
                .saturating_mul(1000),
        )
        .unwrap_or(i64::MAX);
        now_ms.saturating_add(lifetime)
    }
}
