//! Room aliases (`#name:server` → room).

use sqlx::Row;

use super::Store;

impl Store {
    /// The room an alias points to.
    pub async fn alias_room(&self, alias: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT room_id FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .fetch_optional(&self.pool)
            .await
    }

    /// `(room, creator)` of an alias.
    pub async fn alias(&self, alias: &str) -> Result<Option<(String, String)>, sqlx::Error> {
        let row = sqlx::query("SELECT room_id, creator FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .transpose()
    }

    /// Adds an alias; false when it exists already.
    pub async fn insert_alias(
        &self,
        alias: &str,
        room_id: &str,
        creator: &str,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3) \
             ON CONFLICT (alias) DO NOTHING",
        )
        .bind(alias)
        .bind(room_id)
        .bind(creator)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes an alias.
    pub async fn delete_alias(&self, alias: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The aliases pointing at a room.
    pub async fn aliases_of(&self, room_id: &str) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
            .bind(room_id)
            .fetch_all(&self.pool)
            .await
    }
}
