//! Gate verdicts by (rule digest, address): in this process's memory, or in Redis when
//! configured so every instance reuses (and drops) the same verdicts.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use anyhow::Context;
use matrixon_chain::{gate::AddressVerdict, siwe::Address};
use redis::{AsyncCommands, aio::ConnectionManager};

/// Most verdicts kept in memory; the oldest-expiring half is dropped when full.
const MEMORY_CAPACITY: usize = 100_000;

/// Where verdicts are kept.
pub enum VerdictCache {
    /// This process only.
    Memory(Mutex<HashMap<(String, Address), (i64, AddressVerdict)>>),
    /// Shared through Redis, keys `matrixon:<server>:gate:<address>:<rule digest>`.
    Redis {
        /// The connection.
        connection: ConnectionManager,
        /// Key prefix, `matrixon:<server>:gate:`.
        prefix: String,
    },
}

impl VerdictCache {
    /// Memory, or Redis when a URL is configured.
    pub async fn connect(redis_url: Option<&str>, server_name: &str) -> anyhow::Result<Self> {
        let Some(url) = redis_url else {
            return Ok(Self::Memory(Mutex::default()));
        };
        let client = redis::Client::open(url).context("redis.url is not a Redis URL")?;
        let settings = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let connection = ConnectionManager::new_with_config(client, settings)
            .await
            .context("connecting to Redis (redis.url) for gate verdicts")?;
        Ok(Self::Redis {
            connection,
            prefix: format!("matrixon:{server_name}:gate:"),
        })
    }

    /// A verdict still fresh at `now_ms`. A Redis failure reads as a miss (the chain is asked).
    pub async fn get(&self, key: &str, address: Address, now_ms: i64) -> Option<AddressVerdict> {
        match self {
            Self::Memory(map) => {
                let map = map.lock().ok()?;
                map.get(&(key.to_owned(), address))
                    .filter(|(expires, _)| *expires > now_ms)
                    .map(|(_, verdict)| verdict.clone())
            }
            Self::Redis { connection, prefix } => {
                let mut connection = connection.clone();
                let text: Option<String> = connection
                    .get(format!("{prefix}{address:#x}:{key}"))
                    .await
                    .inspect_err(|e| tracing::warn!(%e, "reading a gate verdict from Redis"))
                    .ok()?;
                // The expiry travels with the verdict so the injected clock decides, as in
                // memory; Redis's own TTL only collects the garbage.
                let (expires, verdict): (i64, AddressVerdict) =
                    serde_json::from_str(&text?).ok()?;
                (expires > now_ms).then_some(verdict)
            }
        }
    }

    /// Keeps a verdict for `ttl_ms` from `now_ms`.
    pub async fn put(
        &self,
        key: &str,
        address: Address,
        verdict: &AddressVerdict,
        now_ms: i64,
        ttl_ms: u64,
    ) {
        let expires_ms = now_ms.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        match self {
            Self::Memory(map) => {
                let Ok(mut map) = map.lock() else { return };
                if map.len() >= MEMORY_CAPACITY {
                    let mut expiries: Vec<i64> = map.values().map(|(e, _)| *e).collect();
                    expiries.sort_unstable();
                    let cut = expiries[expiries.len() / 2];
                    map.retain(|_, (e, _)| *e > cut);
                }
                map.insert((key.to_owned(), address), (expires_ms, verdict.clone()));
            }
            Self::Redis { connection, prefix } => {
                let Ok(text) = serde_json::to_string(&(expires_ms, verdict)) else {
                    return;
                };
                let mut connection = connection.clone();
                let stored: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(format!("{prefix}{address:#x}:{key}"))
                    .arg(text)
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut connection)
                    .await;
                if let Err(e) = stored {
                    tracing::warn!(%e, "storing a gate verdict in Redis");
                }
            }
        }
    }

    /// Drops every verdict about `address` (its holdings just changed).
    pub async fn invalidate(&self, address: Address) {
        match self {
            Self::Memory(map) => {
                if let Ok(mut map) = map.lock() {
                    map.retain(|(_, a), _| *a != address);
                }
            }
            Self::Redis { connection, prefix } => {
                let mut connection = connection.clone();
                let pattern = format!("{prefix}{address:#x}:*");
                let keys: Vec<String> = match connection.scan_match::<_, String>(&pattern).await {
                    Ok(iter) => {
                        use futures_util::StreamExt;
                        iter.filter_map(|k| async move { k.ok() }).collect().await
                    }
                    Err(e) => {
                        tracing::warn!(%e, "listing gate verdicts in Redis");
                        return;
                    }
                };
                if !keys.is_empty() {
                    let mut connection = connection.clone();
                    let dropped: redis::RedisResult<()> = connection.del(keys).await;
                    if let Err(e) = dropped {
                        tracing::warn!(%e, "dropping gate verdicts from Redis");
                    }
                }
            }
        }
    }
}
