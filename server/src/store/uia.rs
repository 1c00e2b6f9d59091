//! User-interactive authentication sessions, kept in the database so any instance can continue one.

use ruma::{OwnedUserId, UserId};
use sqlx::Row;

use super::Store;

/// A UIA session in progress.
#[derive(Clone, Debug)]
pub struct UiaSessionRow {
    /// What the session authorises (`register`, `delete_devices`, …).
    pub operation: String,
    /// The authenticated user it belongs to, for operations on an existing account.
    pub user_id: Option<OwnedUserId>,
    /// Stages completed so far.
    pub completed: Vec<String>,
    /// When it lapses.
    pub expires_ms: i64,
}

impl Store {
    /// Opens a session.
    pub async fn insert_uia_session(
        &self,
        session_id: &str,
        operation: &str,
        user_id: Option<&UserId>,
        expires_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO uia_sessions (session_id, operation, user_id, completed, expires_ts) VALUES ($1, $2, $3, '[]', $4)",
        )
        .bind(session_id)
        .bind(operation)
        .bind(user_id.map(UserId::as_str))
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Loads a session (expired ones included; the caller decides).
    pub async fn uia_session(
        &self,
        session_id: &str,
    ) -> Result<Option<UiaSessionRow>, sqlx::Error> {
        let row = sqlx::query("SELECT operation, user_id, completed, expires_ts FROM uia_sessions WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let user_id: Option<String> = row.try_get(1)?;
            let completed: String = row.try_get(2)?;
            Ok(UiaSessionRow {
                operation: row.try_get(0)?,
                user_id: user_id
                    .map(|id| UserId::parse(id).map_err(|e| sqlx::Error::Decode(Box::new(e))))
                    .transpose()?,
                completed: serde_json::from_str(&completed)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                expires_ms: row.try_get(3)?,
            })
        })
        .transpose()
    }

    /// Records the stages completed so far.
    pub async fn set_uia_completed(
        &self,
        session_id: &str,
        completed: &[String],
    ) -> Result<(), sqlx::Error> {
        let json =
            serde_json::to_string(completed).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        sqlx::query("UPDATE uia_sessions SET completed = $1 WHERE session_id = $2")
            .bind(json)
            .bind(session_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends a session and sweeps expired ones.
    pub async fn delete_uia_session(
        &self,
        session_id: &str,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM uia_sessions WHERE session_id = $1 OR expires_ts < $2")
            .bind(session_id)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl Store {
    /// A registration's remembered parameters (JSON) and the account it made, unless lapsed.
    pub async fn registration_session(
        &self,
        session_id: &str,
        now_ms: i64,
    ) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT params, user_id FROM registration_sessions \
             WHERE session_id = $1 AND expires_ts > $2",
        )
        .bind(session_id)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .transpose()
    }

    /// Remembers (or replaces) a registration's parameters until `expires_ms`, unless it has
    /// already made its account; lapsed sessions go at the same time.
    pub async fn save_registration_params(
        &self,
        session_id: &str,
        params: &str,
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM registration_sessions WHERE expires_ts <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO registration_sessions (session_id, params, user_id, expires_ts) \
             VALUES ($1, $2, NULL, $3) ON CONFLICT (session_id) DO UPDATE \
             SET params = excluded.params WHERE registration_sessions.user_id IS NULL",
        )
        .bind(session_id)
        .bind(params)
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the account a registration made, so that replaying its session signs in to it.
    pub async fn registration_completed(
        &self,
        session_id: &str,
        user_id: &UserId,
        expires_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO registration_sessions (session_id, params, user_id, expires_ts) \
             VALUES ($1, '{}', $2, $3) ON CONFLICT (session_id) DO UPDATE \
             SET user_id = excluded.user_id",
        )
        .bind(session_id)
        .bind(user_id.as_str())
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
