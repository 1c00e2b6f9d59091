//! The `users` table.

use ruma::{OwnedUserId, UserId};
use sqlx::Row;

use super::Store;

/// What happened to an account creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateAccount {
    /// The account exists now.
    Created,
    /// Someone already has this ID; nothing changed.
    Taken,
    /// The registration token is unknown, used up or expired; nothing changed.
    TokenUnusable,
}

/// Which kind of account a creation makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountKind {
    /// An ordinary user.
    User,
    /// A server administrator.
    Admin,
    /// A guest (`registration.guest_access`).
    Guest,
}

/// One account.
#[derive(Clone, Debug)]
pub struct UserRow {
    /// Full Matrix ID.
    pub user_id: OwnedUserId,
    /// argon2id PHC string; `None` for accounts without a password.
    pub password_hash: Option<String>,
    /// Server administrator.
    pub is_admin: bool,
    /// Deactivated accounts cannot log in.
    pub deactivated: bool,
}

impl Store {
    /// Whether the account is a guest's (unknown accounts are not).
    pub async fn is_guest(&self, user_id: &str) -> Result<bool, sqlx::Error> {
        let guest: Option<i64> =
            sqlx::query_scalar("SELECT is_guest FROM users WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(guest.is_some_and(|g| g != 0))
    }

    /// Creates an account, consuming one use of `registration_token` in the same transaction.
    pub async fn create_account(
        &self,
        user_id: &UserId,
        password_hash: Option<&str>,
        kind: AccountKind,
        registration_token: Option<&str>,
        now_ms: i64,
    ) -> Result<CreateAccount, sqlx::Error> {
        let mut tx = self.begin().await?;
        if !use_registration_token(&mut tx, registration_token, now_ms).await? {
            return Ok(CreateAccount::TokenUnusable);
        }
        let inserted = sqlx::query(
            "INSERT INTO users (user_id, localpart, password_hash, is_admin, is_guest, deactivated, created_ts) \
             VALUES ($1, $2, $3, $4, $5, 0, $6) ON CONFLICT DO NOTHING",
        )
        .bind(user_id.as_str())
        .bind(user_id.localpart())
        .bind(password_hash)
        .bind(i64::from(kind == AccountKind::Admin))
        .bind(i64::from(kind == AccountKind::Guest))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            return Ok(CreateAccount::Taken);
        }
        tx.commit().await?;
        Ok(CreateAccount::Created)
    }

    /// Turns a guest account into a full one with a password (`registration_token`
    /// consumed in the same transaction); `Taken` when the account is not a guest's.
    pub async fn upgrade_guest(
        &self,
        user_id: &UserId,
        password_hash: Option<&str>,
        registration_token: Option<&str>,
        now_ms: i64,
    ) -> Result<CreateAccount, sqlx::Error> {
        let mut tx = self.begin().await?;
        if !use_registration_token(&mut tx, registration_token, now_ms).await? {
            return Ok(CreateAccount::TokenUnusable);
        }
        let upgraded = sqlx::query(
            "UPDATE users SET is_guest = 0, password_hash = $1 \
             WHERE user_id = $2 AND is_guest = 1 AND deactivated = 0",
        )
        .bind(password_hash)
        .bind(user_id.as_str())
        .execute(&mut *tx)
        .await?;
        if upgraded.rows_affected() != 1 {
            return Ok(CreateAccount::Taken);
        }
        tx.commit().await?;
        Ok(CreateAccount::Created)
    }

    /// Looks an account up by its full ID.
    pub async fn user(&self, user_id: &UserId) -> Result<Option<UserRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT user_id, password_hash, is_admin, deactivated FROM users WHERE user_id = $1",
        )
        .bind(user_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let id: String = row.try_get(0)?;
            Ok(UserRow {
                user_id: UserId::parse(id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                password_hash: row.try_get(1)?,
                is_admin: row.try_get::<i64, _>(2)? != 0,
                deactivated: row.try_get::<i64, _>(3)? != 0,
            })
        })
        .transpose()
    }

    /// True when no account (active or deactivated) uses this ID.
    pub async fn user_id_free(&self, user_id: &UserId) -> Result<bool, sqlx::Error> {
        let row = sqlx::query("SELECT 1 FROM users WHERE user_id = $1")
            .bind(user_id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_none())
    }

    /// Replaces the password hash.
    pub async fn set_password_hash(
        &self,
        user_id: &UserId,
        hash: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE user_id = $2")
            .bind(hash)
            .bind(user_id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks the account deactivated, drops its password, every device (tokens cascade), its
    /// pushers and its wallets (which may then sign in to, or be linked to, another account).
    pub async fn deactivate_user(&self, user_id: &UserId) -> Result<(), sqlx::Error> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = $1")
            .bind(user_id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM devices WHERE user_id = $1")
            .bind(user_id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM login_tokens WHERE user_id = $1")
            .bind(user_id.as_str())
            .execute(&mut *tx)
            .await?;
        for table in [
            "DELETE FROM cross_signing_keys WHERE user_id = $1",
            "DELETE FROM key_signatures WHERE target_user_id = $1 OR signer_user_id = $1",
            "DELETE FROM backup_keys WHERE user_id = $1",
            "DELETE FROM backup_versions WHERE user_id = $1",
            "DELETE FROM pushers WHERE user_id = $1",
            "DELETE FROM wallets WHERE user_id = $1",
            "DELETE FROM gate_vaults WHERE user_id = $1",
        ] {
            sqlx::query(table)
                .bind(user_id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        super::keys::record_device_list_change(&mut tx, user_id.as_str()).await?;
        tx.commit().await
    }
}

/// Counts one use of a registration token, if one is given; false when it is used up or
/// expired.
async fn use_registration_token(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    token: Option<&str>,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let Some(token) = token else {
        return Ok(true);
    };
    let used = sqlx::query(
        "UPDATE registration_tokens SET completed = completed + 1 WHERE token = $1 \
         AND (uses_allowed IS NULL OR completed < uses_allowed) \
         AND (expires_ts IS NULL OR expires_ts > $2)",
    )
    .bind(token)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(used.rows_affected() == 1)
}
