//! Sessions: devices with access tokens, refresh tokens and one-time login tokens.

use std::time::Duration;

use ruma::{OwnedDeviceId, OwnedUserId, UserId};

use super::{Services, secrets};
use crate::{
    http::error::{Error, Result},
    store::NewTokens,
};

/// Only one last-seen write per device in this period, so reads stay reads.
const LAST_SEEN_RESOLUTION_MS: i64 = 60_000;

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Session {
    /// Who.
    pub user_id: OwnedUserId,
    /// From which device.
    pub device_id: OwnedDeviceId,
    /// Server administrator.
    pub is_admin: bool,
    /// A guest, limited to what guests may do.
    pub is_guest: bool,
}

/// Secrets handed to a client that just logged in or refreshed.
#[derive(Clone, Debug)]
pub struct IssuedSession {
    /// The account.
    pub user_id: OwnedUserId,
    /// The device.
    pub device_id: OwnedDeviceId,
    /// Bearer token for requests.
    pub access_token: String,
    /// Present when the client asked for refreshable tokens.
    pub refresh_token: Option<String>,
    /// Lifetime of `access_token` when it expires.
    pub expires_in: Option<Duration>,
}

impl Services {
    fn new_tokens(&self, refreshable: bool) -> (String, Option<String>, Option<Duration>) {
        let access = secrets::new_token("mxa");
        if refreshable {
            let lifetime =
                Duration::from_secs(self.config.sessions.refreshable_access_token_lifetime_s);
            (access, Some(secrets::new_token("mxr")), Some(lifetime))
        } else {
            (access, None, None)
        }
    }

    fn expiry_ms(&self, lifetime: Option<Duration>) -> Option<i64> {
        lifetime.map(|d| {
            self.now_ms()
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        })
    }

    /// Logs `user_id` in on `device_id` (a new device when `None`), replacing that device's tokens.
    pub async fn start_session(
        &self,
        user_id: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<&str>,
        refreshable: bool,
    ) -> Result<IssuedSession> {
        let device_id = device_id.unwrap_or_else(secrets::new_device_id);
        if device_id.as_str().is_empty() || device_id.as_str().len() > 255 {
            return Err(Error::invalid_param(
                "device_id must be 1 to 255 characters",
            ));
        }
        let display_name = display_name.map(|n| truncate(n, 100));
        let (access_token, refresh_token, expires_in) = self.new_tokens(refreshable);
        let access_hash = secrets::hash_token(&access_token);
        let refresh_hash = refresh_token.as_deref().map(secrets::hash_token);
        let tokens = NewTokens {
            access_hash: &access_hash,
            refresh_hash: refresh_hash.as_deref(),
            access_expires_ms: self.expiry_ms(expires_in),
        };
        self.store
            .start_session(user_id, &device_id, display_name, tokens, self.now_ms())
            .await?;
        // A new device is news for everyone sharing a room (and the user's other devices), as
        // on Synapse: their clients refresh the user's device list.
        self.store.device_list_changed(user_id.as_str()).await?;
        self.wake_device_watchers(user_id).await?;
        Ok(IssuedSession {
            user_id: user_id.to_owned(),
            device_id,
            access_token,
            refresh_token,
            expires_in,
        })
    }

    /// Resolves a bearer token to its session: 401 `M_UNKNOWN_TOKEN` (soft logout if expired).
    pub async fn authenticate(&self, access_token: &str, ip: Option<String>) -> Result<Session> {
        let Some(row) = self
            .store
            .access_token(&secrets::hash_token(access_token))
            .await?
        else {
            return Err(Error::unknown_token(false));
        };
        let now = self.now_ms();
        if row.expires_ms.is_some_and(|expires| expires <= now) {
            return Err(Error::unknown_token(true));
        }
        if row
            .last_seen_ms
            .is_none_or(|seen| now - seen >= LAST_SEEN_RESOLUTION_MS)
        {
            self.store
                .touch_device(&row.user_id, &row.device_id, ip.as_deref(), now)
                .await?;
        }
        Ok(Session {
            user_id: row.user_id,
            device_id: row.device_id,
            is_admin: row.is_admin,
            is_guest: row.is_guest,
        })
    }

    /// Exchanges a refresh token for a new access and refresh token; the old ones stop working.
    pub async fn refresh(&self, refresh_token: &str) -> Result<IssuedSession> {
        let (access_token, new_refresh, expires_in) = self.new_tokens(true);
        let access_hash = secrets::hash_token(&access_token);
        let refresh_hash = new_refresh.as_deref().map(secrets::hash_token);
        let tokens = NewTokens {
            access_hash: &access_hash,
            refresh_hash: refresh_hash.as_deref(),
            access_expires_ms: self.expiry_ms(expires_in),
        };
        let refreshed = self
            .store
            .refresh_session(&secrets::hash_token(refresh_token), tokens, self.now_ms())
            .await?
            .ok_or_else(|| Error::unknown_token(false))?;
        Ok(IssuedSession {
            user_id: refreshed.user_id,
            device_id: refreshed.device_id,
            access_token,
            refresh_token: new_refresh,
            expires_in,
        })
    }

    /// A one-time login token for `user_id` (for `m.login.token`) and its lifetime.
    pub async fn mint_login_token(&self, user_id: &UserId) -> Result<(String, Duration)> {
        let token = secrets::new_token("mxl");
        let lifetime = Duration::from_secs(self.config.sessions.login_token_lifetime_s);
        let expires = self.expiry_ms(Some(lifetime)).unwrap_or(i64::MAX);
        self.store
            .insert_login_token(&secrets::hash_token(&token), user_id, expires)
            .await?;
        Ok((token, lifetime))
    }

    /// Consumes a login token: 403 `M_FORBIDDEN` when unknown, used or expired.
    pub async fn consume_login_token(&self, token: &str) -> Result<OwnedUserId> {
        self.store
            .take_login_token(&secrets::hash_token(token), self.now_ms())
            .await?
            .ok_or_else(|| Error::forbidden("Invalid or expired login token"))
    }
}

fn truncate(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((idx, _)) => &s[..idx],
        None => s,
    }
}
