//! Display names and avatars.

use sqlx::Row;

use super::Store;

impl Store {
    /// `(displayname, avatar_url)`; both `None` when never set.
    pub async fn profile(
        &self,
        user_id: &str,
    ) -> Result<(Option<String>, Option<String>), sqlx::Error> {
        let row = sqlx::query("SELECT displayname, avatar_url FROM profiles WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => (row.try_get(0)?, row.try_get(1)?),
            None => (None, None),
        })
    }

    /// Sets the display name (`field = "displayname"`) or avatar (`"avatar_url"`).
    pub async fn set_profile_field(
        &self,
        user_id: &str,
        field: ProfileField,
        value: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        let sql = match field {
            ProfileField::Displayname => {
                "INSERT INTO profiles (user_id, displayname) VALUES ($1, $2) \
                 ON CONFLICT (user_id) DO UPDATE SET displayname = excluded.displayname"
            }
            ProfileField::AvatarUrl => {
                "INSERT INTO profiles (user_id, avatar_url) VALUES ($1, $2) \
                 ON CONFLICT (user_id) DO UPDATE SET avatar_url = excluded.avatar_url"
            }
        };
        sqlx::query(sql)
            .bind(user_id)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// The two profile fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileField {
    /// `displayname`.
    Displayname,
    /// `avatar_url`.
    AvatarUrl,
}

impl Store {
    /// Active local users whose ID or display name contains `term` (case-insensitive):
    /// `(user_id, displayname, avatar_url)`, at most `limit`.
    pub async fn search_users(
        &self,
        term: &str,
        limit: i64,
    ) -> Result<Vec<(String, Option<String>, Option<String>)>, sqlx::Error> {
        let escaped = term
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let pattern = format!("%{escaped}%");
        let rows = sqlx::query(
            "SELECT u.user_id, p.displayname, p.avatar_url FROM users u \
             LEFT JOIN profiles p ON p.user_id = u.user_id WHERE u.deactivated = 0 AND \
             (LOWER(u.user_id) LIKE $1 ESCAPE '\\' OR LOWER(COALESCE(p.displayname, '')) LIKE $1 ESCAPE '\\') \
             ORDER BY u.user_id LIMIT $2",
        )
        .bind(pattern)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect()
    }
}
