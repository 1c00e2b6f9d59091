//! Persistence: one interface over SQLite (embedded default) and PostgreSQL (scale-out).
//!
//! Queries are written once in the SQL both backends share (`$n` placeholders, `RETURNING`,
//! `ON CONFLICT`) and run through sqlx's `Any` driver; only the migrations differ per backend.

mod account_data;
mod aliases;
mod backfill;
mod backup;
mod devices;
mod erasure;
mod events;
mod export;
mod federation;
mod filters;
mod forks;
mod gates;
mod keys;
mod media;
mod names;
mod nonces;
pub mod oauth;
mod openid;
mod profiles;
mod push;
mod receipts;
mod registration_tokens;
pub mod rendezvous;
pub mod reports;
mod server_keys;
mod sliding_sync;
mod streams;
mod threepids;
mod to_device;
mod tokens;
mod uia;
mod users;
mod wallets;

use std::{path::Path, str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    AnyPool, Executor,
    any::{AnyPoolOptions, install_default_drivers},
    migrate::Migrator,
};

pub use backfill::PastEvent;
pub use backup::{BackupKeyRow, BackupVersionRow};
pub use devices::DeviceRow;
pub use events::{MembershipRow, NewEvent, RoomRow, StateMap, StoredEvent};
pub use export::UploadRow;
pub use forks::Resolution;
pub use gates::{GateAuditRow, PaymentRow};
pub use keys::KeySignature;
pub use media::MediaRow;
pub use profiles::ProfileField;
pub use push::{NotificationRow, PushAction, PusherRow};
pub use receipts::ReceiptRow;
pub use registration_tokens::RegistrationTokenRow;
pub use server_keys::RemoteKey;
pub use sliding_sync::{RoomStamp, is_bump_type};
pub use to_device::ToDeviceRow;
pub use tokens::{AccessTokenRow, NewTokens, RefreshedTokens};
pub use uia::UiaSessionRow;
pub use users::{AccountKind, CreateAccount, UserRow};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// Which database sits behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded, one file, WAL mode.
    Sqlite,
    /// Shared by several instances.
    Postgres,
}

/// The database handle every service goes through.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Serialises multi-statement writes on SQLite, which has one writer.
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// State groups never change once written: recently read ones, kept in memory.
    state_cache: std::sync::Arc<std::sync::Mutex<events::StateCache>>,
}

impl Store {
    /// Opens (creating when needed) the database at `url` and applies pending migrations.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        install_default_drivers();
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            let file = path.split('?').next().unwrap_or(path);
            if file != ":memory:"
                && let Some(dir) = Path::new(file)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("creating the database directory {}", dir.display())
                })?;
            }
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = if path.contains("mode=") {
                format!("sqlite:{path}")
            } else {
                format!("sqlite:{path}{sep}mode=rwc")
            };
            (Backend::Sqlite, url)
        } else {
            (Backend::Postgres, url.to_owned())
        };
        // Validate the URL up front so a typo is reported as such, not as a pool time-out.
        sqlx::any::AnyConnectOptions::from_str(&url).context("parsing database.url")?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            // An embedded SQLite connection does not go stale: no round trip to its worker
            // thread before every use. A PostgreSQL one may (a restart): checked.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // A send to a large room writes a notification row per member, each
                        // on a page of its own (they are keyed by user): a 16 MiB cache keeps
                        // them from spilling mid-transaction, statement journals stay in
                        // memory and the WAL is folded back every 16 MiB, not every 4.
                        // `synchronous = FULL`: every commit reaches the disk before it is
                        // answered, so a power loss cannot take a send already acknowledged
                        // (NORMAL keeps the database consistent but may drop the last commits).
                        conn.execute(
                            "PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL; \
                             PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; \
                             PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY; \
                             PRAGMA wal_autocheckpoint = 4000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .with_context(|| format!("connecting to the {backend:?} database"))?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&pool)
            .await
            .context("applying database migrations")?;
        Ok(Self {
            pool,
            backend,
            write_lock: std::sync::Arc::default(),
            state_cache: std::sync::Arc::default(),
        })
    }

    /// Writes a consistent copy of the SQLite database to `out` (a new file), readers and
    /// writers carrying on meanwhile (`VACUUM INTO`). PostgreSQL is backed up with its own
    /// tools.
    pub async fn backup_to(&self, out: &std::path::Path) -> anyhow::Result<()> {
        if self.backend == Backend::Postgres {
            anyhow::bail!(
                "the database is PostgreSQL: back it up with pg_dump (see docs/operations.md)"
            );
        }
        if out.exists() {
            anyhow::bail!("{} exists already: name a new file", out.display());
        }
        let path = out
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("{} is not a UTF-8 path", out.display()))?;
        sqlx::query("VACUUM INTO $1")
            .bind(path)
            .execute(&self.pool)
            .await
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
        Ok(())
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Connections open and idle, for the metrics gauge.
    pub fn pool_usage(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Waits for checked-out connections to return, then closes the pool (clean SQLite WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// True when `err` is a unique-constraint violation (a lost race or a duplicate).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::Store;

    /// Acknowledged writes survive a power loss: every connection syncs each commit (2 is
    /// FULL), and the journal is a WAL.
    #[tokio::test]
    async fn sqlite_commits_are_durable() {
        let dir = std::env::temp_dir().join(format!("matrixon-durable-{}", std::process::id()));
        let url = format!("sqlite:{}", dir.join("db.sqlite").display());
        let store = Store::connect(&url, 2).await.expect("store");
        for _ in 0..2 {
            let mut conn = store.pool.acquire().await.expect("connection");
            let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await
                .expect("pragma");
            assert_eq!(synchronous, 2, "synchronous = FULL");
            let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut *conn)
                .await
                .expect("pragma");
            assert_eq!(journal, "wal");
        }
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
