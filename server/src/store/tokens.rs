//! Access, refresh and login tokens, stored only as SHA-256 hashes.

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use sqlx::Row;

use super::Store;

/// What an access token stands for.
#[derive(Clone, Debug)]
pub struct AccessTokenRow {
    /// The account.
    pub user_id: OwnedUserId,
    /// The device the token belongs to.
    pub device_id: OwnedDeviceId,
    /// Expiry of a refreshable token; `None` for tokens that do not expire.
    pub expires_ms: Option<i64>,
    /// The account is an administrator.
    pub is_admin: bool,
    /// The account is a guest's.
    pub is_guest: bool,
    /// Time of the device's last recorded request.
    pub last_seen_ms: Option<i64>,
}

/// Who a successful refresh belongs to.
#[derive(Clone, Debug)]
pub struct RefreshedTokens {
    /// The account.
    pub user_id: OwnedUserId,
    /// Its device.
    pub device_id: OwnedDeviceId,
}

/// The hashes of a new session's secrets and how long the access token lives.
#[derive(Clone, Debug)]
pub struct NewTokens<'a> {
    /// SHA-256 of the access token.
    pub access_hash: &'a str,
    /// SHA-256 of the refresh token, when one is issued.
    pub refresh_hash: Option<&'a str>,
    /// Expiry of the access token.
    pub access_expires_ms: Option<i64>,
}

fn parse_user(id: String) -> Result<OwnedUserId, sqlx::Error> {
    UserId::parse(id).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl Store {
    /// Creates the device if new (keeping an existing one's name) and replaces its tokens.
    pub async fn start_session(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
        display_name: Option<&str>,
        tokens: NewTokens<'_>,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO devices (user_id, device_id, display_name, created_ts) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, device_id) DO NOTHING",
        )
        .bind(user_id.as_str())
        .bind(device_id.as_str())
        .bind(display_name)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        for table in ["access_tokens", "refresh_tokens"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE user_id = $1 AND device_id = $2"
            ))
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        insert_tokens(&mut tx, user_id, device_id, &tokens, now_ms).await?;
        tx.commit().await
    }

    /// Resolves an access token hash to its session, whatever its expiry.
    pub async fn access_token(&self, hash: &str) -> Result<Option<AccessTokenRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT t.user_id, t.device_id, t.expires_ts, u.is_admin, d.last_seen_ts, u.is_guest \
             FROM access_tokens t \
             JOIN users u ON u.user_id = t.user_id \
             JOIN devices d ON d.user_id = t.user_id AND d.device_id = t.device_id \
             WHERE t.token_hash = $1 AND u.deactivated = 0",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(AccessTokenRow {
                user_id: parse_user(row.try_get(0)?)?,
                device_id: row.try_get::<String, _>(1)?.into(),
                expires_ms: row.try_get(2)?,
                is_admin: row.try_get::<i64, _>(3)? != 0,
                last_seen_ms: row.try_get(4)?,
                is_guest: row.try_get::<i64, _>(5)? != 0,
            })
        })
        .transpose()
    }

    /// Swaps a refresh token for new tokens; `None` when the refresh token is unknown.
    ///
    /// The old refresh token and the access token issued with it stop working at once.
    pub async fn refresh_session(
        &self,
        old_refresh_hash: &str,
        tokens: NewTokens<'_>,
        now_ms: i64,
    ) -> Result<Option<RefreshedTokens>, sqlx::Error> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "DELETE FROM refresh_tokens WHERE token_hash = $1 RETURNING user_id, device_id",
        )
        .bind(old_refresh_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user_id = parse_user(row.try_get(0)?)?;
        let device_id: OwnedDeviceId = row.try_get::<String, _>(1)?.into();
        // The cascade covers the access token issued with it; be explicit for older tokens.
        sqlx::query("DELETE FROM access_tokens WHERE refresh_token_hash = $1")
            .bind(old_refresh_hash)
            .execute(&mut *tx)
            .await?;
        insert_tokens(&mut tx, &user_id, &device_id, &tokens, now_ms).await?;
        tx.commit().await?;
        Ok(Some(RefreshedTokens { user_id, device_id }))
    }

    /// Remembers a login token until `expires_ms`.
    pub async fn insert_login_token(
        &self,
        hash: &str,
        user_id: &UserId,
        expires_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)",
        )
        .bind(hash)
        .bind(user_id.as_str())
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Consumes a login token: its user, the first time only and only before it expires.
    pub async fn take_login_token(
        &self,
        hash: &str,
        now_ms: i64,
    ) -> Result<Option<OwnedUserId>, sqlx::Error> {
        let row = sqlx::query(
            "DELETE FROM login_tokens WHERE token_hash = $1 RETURNING user_id, expires_ts",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        sqlx::query("DELETE FROM login_tokens WHERE expires_ts < $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        match row {
            Some(row) if row.try_get::<i64, _>(1)? > now_ms => {
                Ok(Some(parse_user(row.try_get(0)?)?))
            }
            _ => Ok(None),
        }
    }
}

async fn insert_tokens(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: &UserId,
    device_id: &DeviceId,
    tokens: &NewTokens<'_>,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    if let Some(refresh_hash) = tokens.refresh_hash {
        sqlx::query("INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts) VALUES ($1, $2, $3, $4)")
            .bind(refresh_hash)
            .bind(user_id.as_str())
            .bind(device_id.as_str())
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query(
        "INSERT INTO access_tokens (token_hash, user_id, device_id, refresh_token_hash, expires_ts, created_ts) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tokens.access_hash)
    .bind(user_id.as_str())
    .bind(device_id.as_str())
    .bind(tokens.refresh_hash)
    .bind(tokens.access_expires_ms)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
