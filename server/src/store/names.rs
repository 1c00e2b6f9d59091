//! What ENS last gave each wallet user's profile, and who is due a refresh.

use sqlx::Row;

use super::Store;

impl Store {
    /// The display name ENS last gave `user_id` (outer `None`: never refreshed).
    pub async fn ens_profile(&self, user_id: &str) -> Result<Option<Option<String>>, sqlx::Error> {
        let row = sqlx::query("SELECT displayname FROM ens_profiles WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| row.try_get(0)).transpose()
    }

    /// Records what ENS gave `user_id` now.
    pub async fn set_ens_profile(
        &self,
        user_id: &str,
        displayname: Option<&str>,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO ens_profiles (user_id, displayname, refreshed_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET displayname = $2, refreshed_ms = $3",
        )
        .bind(user_id)
        .bind(displayname)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The avatar last imported from ENS for `user_id`: `(source, mxc URI)`.
    pub async fn ens_avatar(
        &self,
        user_id: &str,
    ) -> Result<(Option<String>, Option<String>), sqlx::Error> {
        let row =
            sqlx::query("SELECT avatar_source, avatar_url FROM ens_profiles WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            Some(row) => (row.try_get(0)?, row.try_get(1)?),
            None => (None, None),
        })
    }

    /// Records the avatar imported from ENS (after [`Store::set_ens_profile`] made the row).
    pub async fn set_ens_avatar(
        &self,
        user_id: &str,
        source: Option<&str>,
        avatar_url: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE ens_profiles SET avatar_source = $1, avatar_url = $2 WHERE user_id = $3",
        )
        .bind(source)
        .bind(avatar_url)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Users with a wallet whose ENS profile was last refreshed before `before_ms` (or never).
    pub async fn ens_profiles_due(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT w.user_id FROM wallets w \
             JOIN users u ON u.user_id = w.user_id AND u.deactivated = 0 \
             LEFT JOIN ens_profiles p ON p.user_id = w.user_id \
             WHERE p.refreshed_ms IS NULL OR p.refreshed_ms < $1 \
             GROUP BY w.user_id ORDER BY MIN(COALESCE(p.refreshed_ms, 0)), w.user_id LIMIT $2",
        )
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }
}

impl Store {
    /// Marks a wallet account as reserved by an invite (not yet signed in to).
    pub async fn mark_reserved(&self, user_id: &str, now_ms: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO reserved_accounts (user_id, reserved_ms) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The wallet signed in: its account is no longer a reservation.
    pub async fn claim_reserved(&self, user_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM reserved_accounts WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Releases `address` from the reserved account `user_id` (the wallet's owner links it to
    /// their own account instead): the wallet is unlinked and the reservation deactivated.
    /// False when `user_id` is not a reservation.
    pub async fn release_reserved(
        &self,
        user_id: &str,
        address: &str,
    ) -> Result<bool, sqlx::Error> {
        let _turn = self.writer().await;
        let mut tx = self.begin().await?;
        let released = sqlx::query("DELETE FROM reserved_accounts WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        if released.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM wallets WHERE address = $1 AND user_id = $2")
            .bind(address)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE users SET deactivated = 1 WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}
