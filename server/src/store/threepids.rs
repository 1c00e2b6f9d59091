//! Where users' e-mail addresses and phone numbers were bound on identity servers.

use super::Store;

impl Store {
    /// Remembers that `user_id`'s `medium`/`address` is bound on `id_server`.
    pub async fn remember_threepid_binding(
        &self,
        user_id: &str,
        medium: &str,
        address: &str,
        id_server: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO threepid_bindings (user_id, medium, address, id_server) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(medium)
        .bind(address)
        .bind(id_server)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets one binding (it was unbound).
    pub async fn forget_threepid_binding(
        &self,
        user_id: &str,
        medium: &str,
        address: &str,
        id_server: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "DELETE FROM threepid_bindings \
             WHERE user_id = $1 AND medium = $2 AND address = $3 AND id_server = $4",
        )
        .bind(user_id)
        .bind(medium)
        .bind(address)
        .bind(id_server)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The identity servers `user_id`'s `medium`/`address` is bound on.
    pub async fn threepid_binding_servers(
        &self,
        user_id: &str,
        medium: &str,
        address: &str,
    ) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT id_server FROM threepid_bindings \
             WHERE user_id = $1 AND medium = $2 AND address = $3 ORDER BY id_server",
        )
        .bind(user_id)
        .bind(medium)
        .bind(address)
        .fetch_all(&self.pool)
        .await
    }

    /// Every address `user_id` has bound somewhere, once each: `(medium, address)`.
    pub async fn threepid_bindings(
        &self,
        user_id: &str,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT DISTINCT medium, address FROM threepid_bindings WHERE user_id = $1 \
             ORDER BY medium, address",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
    }
}
