//! Single-use nonces in the database, or in Redis when `redis.url` is set: either way every
//! instance that shares the store honours "use once".

use anyhow::Context;

use redis::aio::ConnectionManager;

use super::Services;
use crate::http::error::{Error, Result};

/// Where nonces live.
pub enum NonceStore {
    /// The `nonces` table.
    Database,
    /// Keys with a TTL in a shared Redis.
    Redis(ConnectionManager),
}

impl NonceStore {
    /// Nonces in Redis when a connection is given (checked for GETDEL, Redis 6.2+: an older
    /// server must stop the start, not fail every sign-in later), else in the database.
    pub async fn new(redis: Option<ConnectionManager>) -> anyhow::Result<Self> {
        let Some(mut manager) = redis else {
            return Ok(Self::Database);
        };
        redis::cmd("GETDEL")
            .arg("matrixon:probe")
            .query_async::<Option<String>>(&mut manager)
            .await
            .context("Redis at redis.url does not support GETDEL (Redis 6.2 or later is needed)")?;
        Ok(Self::Redis(manager))
    }
}

fn redis_error(e: redis::RedisError) -> Error {
    Error::Internal(anyhow::Error::new(e).context("Redis"))
}

impl Services {
    fn nonce_key(&self, kind: &str, nonce: &str) -> String {
        format!("matrixon:{}:nonce:{kind}:{nonce}", self.config.server_name)
    }

    /// Remembers a fresh nonce of `kind` until `expires_ms`.
    pub(super) async fn remember_nonce(
        &self,
        kind: &str,
        nonce: &str,
        expires_ms: i64,
    ) -> Result<()> {
        match &self.nonces {
            NonceStore::Database => Ok(self.store.insert_nonce(kind, nonce, expires_ms).await?),
            NonceStore::Redis(manager) => {
                let ttl_ms = u64::try_from(expires_ms.saturating_sub(self.now_ms())).unwrap_or(1);
                let mut connection = manager.clone();
                redis::cmd("SET")
                    .arg(self.nonce_key(kind, nonce))
                    .arg(expires_ms)
                    .arg("PX")
                    .arg(ttl_ms.max(1))
                    .arg("NX")
                    .query_async::<Option<String>>(&mut connection)
                    .await
                    .map_err(redis_error)?;
                Ok(())
            }
        }
    }

    /// Spends a nonce: true only the first time, and only before it expires.
    pub(super) async fn spend_nonce(&self, kind: &str, nonce: &str) -> Result<bool> {
        let now = self.now_ms();
        match &self.nonces {
            NonceStore::Database => Ok(self.store.take_nonce(kind, nonce, now).await?),
            NonceStore::Redis(manager) => {
                let mut connection = manager.clone();
                // GETDEL is atomic: of two instances racing for one nonce, one gets it.
                let expires: Option<i64> = redis::cmd("GETDEL")
                    .arg(self.nonce_key(kind, nonce))
                    .query_async(&mut connection)
                    .await
                    .map_err(redis_error)?;
                Ok(expires.is_some_and(|expires| expires > now))
            }
        }
    }
}
