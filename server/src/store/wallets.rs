//! The `wallets` table: which account an Ethereum address signs in to.

use ruma::{OwnedUserId, UserId};
use sqlx::Row;

use super::{CreateAccount, Store};

impl Store {
    /// The account `address` (lower-case hex) is linked to.
    pub async fn wallet_owner(&self, address: &str) -> Result<Option<OwnedUserId>, sqlx::Error> {
        let row = sqlx::query("SELECT user_id FROM wallets WHERE address = $1")
            .bind(address)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            UserId::parse(row.try_get::<String, _>(0)?)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))
        })
        .transpose()
    }

    /// Links `address` to `user_id`; returns the account it is linked to afterwards (another
    /// one when the wallet already belonged elsewhere, in which case nothing changed).
    pub async fn link_wallet(
        &self,
        user_id: &UserId,
        address: &str,
        now_ms: i64,
    ) -> Result<OwnedUserId, sqlx::Error> {
        sqlx::query("INSERT INTO wallets (address, user_id, linked_ts) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(address)
            .bind(user_id.as_str())
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        self.wallet_owner(address)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// Unlinks `address` from `user_id`; false when it was not linked to that account.
    pub async fn unlink_wallet(
        &self,
        user_id: &UserId,
        address: &str,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("DELETE FROM wallets WHERE address = $1 AND user_id = $2")
            .bind(address)
            .bind(user_id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The wallets linked to `user_id`, oldest first, with when they were linked.
    pub async fn wallets(&self, user_id: &UserId) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT address, linked_ts FROM wallets WHERE user_id = $1 ORDER BY linked_ts, address",
        )
        .bind(user_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// True when at least one wallet is linked to `user_id`.
    pub async fn has_wallet(&self, user_id: &UserId) -> Result<bool, sqlx::Error> {
        let row = sqlx::query("SELECT 1 FROM wallets WHERE user_id = $1 LIMIT 1")
            .bind(user_id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Creates a password-less wallet account and links `address` to it, in one transaction.
    pub async fn create_wallet_account(
        &self,
        user_id: &UserId,
        address: &str,
        now_ms: i64,
    ) -> Result<CreateAccount, sqlx::Error> {
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (user_id, localpart, password_hash, is_admin, deactivated, created_ts) \
             VALUES ($1, $2, NULL, 0, 0, $3) ON CONFLICT DO NOTHING",
        )
        .bind(user_id.as_str())
        .bind(user_id.localpart())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            return Ok(CreateAccount::Taken);
        }
        sqlx::query("INSERT INTO wallets (address, user_id, linked_ts) VALUES ($1, $2, $3)")
            .bind(address)
            .bind(user_id.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(CreateAccount::Created)
    }
}
