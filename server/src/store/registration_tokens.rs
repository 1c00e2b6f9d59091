//! Registration tokens: invitations to create an account when registration needs one.

use sqlx::Row;

use super::Store;

/// One registration token and how much of it is left.
#[derive(Clone, Debug)]
pub struct RegistrationTokenRow {
    /// The token itself (operators hand it out, so it is kept readable).
    pub token: String,
    /// Registrations it allows; `None` for unlimited.
    pub uses_allowed: Option<i64>,
    /// Registrations completed with it.
    pub completed: i64,
    /// When it stops working; `None` for never.
    pub expires_ms: Option<i64>,
}

impl RegistrationTokenRow {
    /// True when a registration may still use it at `now_ms`.
    pub fn usable(&self, now_ms: i64) -> bool {
        self.uses_allowed
            .is_none_or(|allowed| self.completed < allowed)
            && self.expires_ms.is_none_or(|expires| expires > now_ms)
    }
}

impl Store {
    /// Creates a token.
    pub async fn insert_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<i64>,
        expires_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO registration_tokens (token, uses_allowed, completed, expires_ts, created_ts) \
             VALUES ($1, $2, 0, $3, $4)",
        )
        .bind(token)
        .bind(uses_allowed)
        .bind(expires_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Looks a token up.
    pub async fn registration_token(
        &self,
        token: &str,
    ) -> Result<Option<RegistrationTokenRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT token, uses_allowed, completed, expires_ts FROM registration_tokens WHERE token = $1",
        )
        .bind(token)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(RegistrationTokenRow {
                token: row.try_get(0)?,
                uses_allowed: row.try_get(1)?,
                completed: row.try_get(2)?,
                expires_ms: row.try_get(3)?,
            })
        })
        .transpose()
    }
}
