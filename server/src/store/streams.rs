//! Positions of the streams other than events (account data, receipts), and SQLite's
//! single-writer turn that multi-statement writes take.

use sqlx::{Any, Transaction};
use tokio::sync::MutexGuard;

use super::{Backend, Store};

impl Store {
    /// On SQLite, waits for the one writer's turn (rather than failing with SQLITE_BUSY);
    /// PostgreSQL needs no turn.
    pub(super) async fn writer(&self) -> Option<MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.write_lock.lock().await),
            Backend::Postgres => None,
        }
    }

    /// A write transaction. On SQLite it takes the database's write lock at once (`BEGIN
    /// IMMEDIATE`, waiting up to the busy timeout): a deferred transaction that reads first
    /// fails with SQLITE_BUSY, without waiting, when another connection wrote in between.
    pub(super) async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Takes the next position of stream `name` inside `tx`.
    pub(super) async fn next_position(
        tx: &mut Transaction<'static, Any>,
        name: &str,
    ) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "INSERT INTO stream_counters (name, value) VALUES ($1, 1) \
             ON CONFLICT (name) DO UPDATE SET value = stream_counters.value + 1 RETURNING value",
        )
        .bind(name)
        .fetch_one(&mut **tx)
        .await
    }

    /// The latest position of stream `name` (0 before its first change).
    pub(super) async fn stream_position(&self, name: &str) -> Result<i64, sqlx::Error> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT value FROM stream_counters WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or(0),
        )
    }
}
