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
