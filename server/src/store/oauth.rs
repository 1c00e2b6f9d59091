//! The OAuth 2.0 API's records: clients, authorization codes, device grants, browser
//! sign-ins, the client each session belongs to, and spent refresh tokens.

use sqlx::Row;

use super::Store;

/// An authorization code as the authorize page issued it.
#[derive(Clone, Debug)]
pub struct OAuthCode {
    /// The client it was issued to.
    pub client_id: String,
    /// Who approved it.
    pub user_id: String,
    /// The device the session will be.
    pub device_id: String,
    /// The scope granted (space-separated).
    pub scope: String,
    /// The redirect URI it was sent to (the token request must name the same).
    pub redirect_uri: String,
    /// PKCE: base64url(SHA-256(verifier)).
    pub code_challenge: String,
    /// When it stops being accepted.
    pub expires_ms: i64,
}

/// A device authorization grant (RFC 8628) as the device page and the token endpoint see it.
#[derive(Clone, Debug)]
pub struct DeviceGrant {
    /// What the user types on the device page.
    pub user_code: String,
    /// The client that asked.
    pub client_id: String,
    /// The scope asked for (with its device scope).
    pub scope: String,
    /// The device the session will be.
    pub device_id: String,
    /// `pending`, `approved` or `denied`.
    pub status: String,
    /// Who approved or denied it.
    pub user_id: Option<String>,
    /// When the device last polled.
    pub last_poll_ms: i64,
    /// When it stops being accepted.
    pub expires_ms: i64,
}

const DEVICE_GRANT_COLUMNS: &str =
    "user_code, client_id, scope, device_id, status, user_id, last_poll_ts, expires_ts";

fn device_grant(row: &sqlx::any::AnyRow) -> Result<DeviceGrant, sqlx::Error> {
    Ok(DeviceGrant {
        user_code: row.try_get(0)?,
        client_id: row.try_get(1)?,
        scope: row.try_get(2)?,
        device_id: row.try_get(3)?,
        status: row.try_get(4)?,
        user_id: row.try_get(5)?,
        last_poll_ms: row.try_get(6)?,
        expires_ms: row.try_get(7)?,
    })
}

impl Store {
    /// Remembers a new device authorization grant (its device code hashed).
    pub async fn insert_device_grant(
        &self,
        device_code_hash: &str,
        grant: &DeviceGrant,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "INSERT INTO oauth_device_grants (device_code_hash, {DEVICE_GRANT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(device_code_hash)
        .bind(&grant.user_code)
        .bind(&grant.client_id)
        .bind(&grant.scope)
        .bind(&grant.device_id)
        .bind(&grant.status)
        .bind(&grant.user_id)
        .bind(grant.last_poll_ms)
        .bind(grant.expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The grant a user code names, while it lasts.
    pub async fn device_grant_by_user_code(
        &self,
        user_code: &str,
        now_ms: i64,
    ) -> Result<Option<DeviceGrant>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_GRANT_COLUMNS} FROM oauth_device_grants \
             WHERE user_code = $1 AND expires_ts > $2"
        ))
        .bind(user_code)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(device_grant).transpose()
    }

    /// Approves or denies a pending grant; whether it was still pending.
    pub async fn decide_device_grant(
        &self,
        user_code: &str,
        status: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE oauth_device_grants SET status = $2, user_id = $3 \
             WHERE user_code = $1 AND status = 'pending' AND expires_ts > $4",
        )
        .bind(user_code)
        .bind(status)
        .bind(user_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The grant a device polls with, recording this poll; an approved or denied grant is
    /// taken (it answers once: of two polls at the same moment only one gets it).
    pub async fn poll_device_grant(
        &self,
        device_code_hash: &str,
        now_ms: i64,
    ) -> Result<Option<DeviceGrant>, sqlx::Error> {
        let _writer = self.writer().await;
        let answered = sqlx::query(&format!(
            "DELETE FROM oauth_device_grants WHERE device_code_hash = $1 AND status <> 'pending' \
             RETURNING {DEVICE_GRANT_COLUMNS}"
        ))
        .bind(device_code_hash)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = answered {
            return device_grant(&row).map(Some);
        }
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_GRANT_COLUMNS} FROM oauth_device_grants WHERE device_code_hash = $1"
        ))
        .bind(device_code_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(grant) = row.as_ref().map(device_grant).transpose()? else {
            return Ok(None);
        };
        sqlx::query("UPDATE oauth_device_grants SET last_poll_ts = $2 WHERE device_code_hash = $1")
            .bind(device_code_hash)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(Some(grant))
    }

    /// Registers a client.
    pub async fn insert_oauth_client(
        &self,
        client_id: &str,
        metadata: &str,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO oauth_clients (client_id, metadata, created_ts) VALUES ($1, $2, $3)",
        )
        .bind(client_id)
        .bind(metadata)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A registered client's metadata (JSON).
    pub async fn oauth_client(&self, client_id: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT metadata FROM oauth_clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Remembers an authorization code (its hash).
    pub async fn insert_oauth_code(
        &self,
        code_hash: &str,
        code: &OAuthCode,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO oauth_codes (code_hash, client_id, user_id, device_id, scope, \
             redirect_uri, code_challenge, expires_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(code_hash)
        .bind(&code.client_id)
        .bind(&code.user_id)
        .bind(&code.device_id)
        .bind(&code.scope)
        .bind(&code.redirect_uri)
        .bind(&code.code_challenge)
        .bind(code.expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes an authorization code: it works once, whatever the outcome of the exchange.
    pub async fn take_oauth_code(&self, code_hash: &str) -> Result<Option<OAuthCode>, sqlx::Error> {
        let _writer = self.writer().await;
        let row = sqlx::query(
            "DELETE FROM oauth_codes WHERE code_hash = $1 RETURNING client_id, user_id, \
             device_id, scope, redirect_uri, code_challenge, expires_ts",
        )
        .bind(code_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(OAuthCode {
                client_id: row.try_get(0)?,
                user_id: row.try_get(1)?,
                device_id: row.try_get(2)?,
                scope: row.try_get(3)?,
                redirect_uri: row.try_get(4)?,
                code_challenge: row.try_get(5)?,
                expires_ms: row.try_get(6)?,
            })
        })
        .transpose()
    }

    /// Remembers a browser's sign-in on the authorize page.
    pub async fn insert_oauth_browser_session(
        &self,
        session_hash: &str,
        user_id: &str,
        expires_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO oauth_browser_sessions (session_hash, user_id, expires_ts) \
             VALUES ($1, $2, $3)",
        )
        .bind(session_hash)
        .bind(user_id)
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The user a browser signed in as and when that sign-in ends, while it lasts.
    pub async fn oauth_browser_user(
        &self,
        session_hash: &str,
        now_ms: i64,
    ) -> Result<Option<(String, i64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT user_id, expires_ts FROM oauth_browser_sessions \
             WHERE session_hash = $1 AND expires_ts > $2",
        )
        .bind(session_hash)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await
    }

    /// Records that a session (device) was issued to a client with a scope.
    pub async fn set_oauth_session(
        &self,
        (user_id, device_id): (&str, &str),
        client_id: &str,
        scope: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO oauth_sessions (user_id, device_id, client_id, scope) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, device_id) DO UPDATE SET client_id = $3, scope = $4",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(client_id)
        .bind(scope)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The client and scope of a session issued through OAuth.
    pub async fn oauth_session(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Option<(String, String)>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT client_id, scope FROM oauth_sessions WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .transpose()
    }

    /// The session a refresh token (its hash) belongs to.
    pub async fn refresh_token_session(
        &self,
        token_hash: &str,
    ) -> Result<Option<(String, String)>, sqlx::Error> {
        let row =
            sqlx::query("SELECT user_id, device_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .transpose()
    }

    /// Remembers a refresh token that was exchanged at `now_ms`, for `retention_ms`, so that
    /// its replay is recognised.
    pub async fn spend_refresh_token(
        &self,
        token_hash: &str,
        (user_id, device_id): (&str, &str),
        (now_ms, retention_ms): (i64, i64),
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO oauth_spent_refresh_tokens \
             (token_hash, user_id, device_id, spent_ts, expires_ts) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_hash) DO NOTHING",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(device_id)
        .bind(now_ms)
        .bind(now_ms.saturating_add(retention_ms))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session a spent refresh token belonged to, and when it was spent.
    pub async fn spent_refresh_token_at(
        &self,
        token_hash: &str,
    ) -> Result<Option<(String, String, i64)>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT user_id, device_id, spent_ts FROM oauth_spent_refresh_tokens \
             WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .transpose()
    }

    /// The session a spent refresh token belonged to.
    pub async fn spent_refresh_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<(String, String)>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT user_id, device_id FROM oauth_spent_refresh_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .transpose()
    }

    /// Lets the user's next cross-signing key replacement through until `expires_ms`.
    pub async fn allow_cross_signing_reset(
        &self,
        user_id: &str,
        expires_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO oauth_cross_signing_resets (user_id, expires_ts) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET expires_ts = $2",
        )
        .bind(user_id)
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes the user's approval of a cross-signing reset, if one is still valid.
    pub async fn take_cross_signing_reset(
        &self,
        user_id: &str,
        now_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let taken = sqlx::query(
            "DELETE FROM oauth_cross_signing_resets WHERE user_id = $1 AND expires_ts > $2",
        )
        .bind(user_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    /// Whether the user approved a cross-signing reset that is still valid.
    pub async fn cross_signing_reset_allowed(
        &self,
        user_id: &str,
        now_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT expires_ts FROM oauth_cross_signing_resets WHERE user_id = $1 AND expires_ts > $2",
        )
        .bind(user_id)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// Forgets expired codes, browser sign-ins and spent refresh tokens.
    pub async fn prune_oauth(&self, now_ms: i64) -> Result<u64, sqlx::Error> {
        let mut gone = 0;
        for table in [
            "oauth_codes",
            "oauth_browser_sessions",
            "oauth_spent_refresh_tokens",
            "oauth_device_grants",
            "oauth_cross_signing_resets",
        ] {
            gone += sqlx::query(&format!("DELETE FROM {table} WHERE expires_ts <= $1"))
                .bind(now_ms)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(gone)
    }
}
