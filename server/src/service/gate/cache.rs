//! Gate verdicts by address and rule digest: in this process's memory, or in Redis when
//! configured so every instance reuses (and drops) the same verdicts. A verdict read before
//! its address was last invalidated (a transfer seen meanwhile) is never served.

use std::{collections::HashMap, sync::Mutex};

use matrixon_chain::{gate::AddressVerdict, siwe::Address};
use redis::aio::ConnectionManager;

/// Most addresses kept in memory; the cache is emptied when it grows past this.
const MEMORY_ADDRESSES: usize = 100_000;
/// The Redis hash field holding when the address was last invalidated.
const INVALIDATED: &str = "invalidated";

/// One address's verdicts: when it was last invalidated, and by rule digest
/// `(expires, read at, verdict)`.
#[derive(Default)]
pub struct Entry {
    invalidated_ms: i64,
    verdicts: HashMap<String, (i64, i64, AddressVerdict)>,
}

/// Where verdicts are kept.
pub enum VerdictCache {
    /// This process only.
    Memory(Mutex<HashMap<Address, Entry>>),
    /// Shared through Redis: one hash per address, `matrixon:<server>:gate:<address>`.
    Redis {
        /// The connection.
        connection: ConnectionManager,
        /// Key prefix, `matrixon:<server>:gate:`.
        prefix: String,
    },
}

impl VerdictCache {
    /// In Redis when a connection is given, else in memory.
    pub fn new(redis: Option<ConnectionManager>, server_name: &str) -> Self {
        match redis {
            Some(connection) => Self::Redis {
                connection,
                prefix: format!("matrixon:{server_name}:gate:"),
            },
            None => Self::Memory(Mutex::default()),
        }
    }

    /// A verdict still fresh at `now_ms` for a reader that accepts verdicts at most
    /// `max_age_ms` old (whoever wrote it may have allowed longer). A Redis failure reads as
    /// a miss (the chain is asked).
    pub async fn get(
        &self,
        key: &str,
        address: Address,
        now_ms: i64,
        max_age_ms: u64,
    ) -> Option<AddressVerdict> {
        let (stored, invalidated) = match self {
            Self::Memory(map) => {
                let map = map.lock().ok()?;
                let entry = map.get(&address)?;
                (entry.verdicts.get(key).cloned()?, entry.invalidated_ms)
            }
            Self::Redis { connection, prefix } => {
                let mut connection = connection.clone();
                let (text, invalidated): (Option<String>, Option<i64>) = redis::cmd("HMGET")
                    .arg(format!("{prefix}{address:#x}"))
                    .arg(key)
                    .arg(INVALIDATED)
                    .query_async(&mut connection)
                    .await
                    .inspect_err(|e| tracing::warn!(%e, "reading a gate verdict from Redis"))
                    .ok()?;
                // The expiry travels with the verdict so the injected clock decides, as in
                // memory; Redis's own TTL only collects the garbage.
                (serde_json::from_str(&text?).ok()?, invalidated.unwrap_or(0))
            }
        };
        let (expires, read_at, verdict) = stored;
        let max_age = i64::try_from(max_age_ms).unwrap_or(i64::MAX);
        let fresh = expires > now_ms && now_ms.saturating_sub(read_at) < max_age;
        (fresh && read_at >= invalidated).then_some(verdict)
    }

    /// Keeps a verdict read at `now_ms` for `ttl_ms`.
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
                if map.len() >= MEMORY_ADDRESSES {
                    map.clear();
                }
                map.entry(address)
                    .or_default()
                    .verdicts
                    .insert(key.to_owned(), (expires_ms, now_ms, verdict.clone()));
            }
            Self::Redis { connection, prefix } => {
                let Ok(text) = serde_json::to_string(&(expires_ms, now_ms, verdict)) else {
                    return;
                };
                let mut connection = connection.clone();
                let hash = format!("{prefix}{address:#x}");
                let stored: redis::RedisResult<()> = redis::pipe()
                    .hset(&hash, key, text)
                    .ignore()
                    .pexpire(&hash, i64::try_from(ttl_ms).unwrap_or(i64::MAX))
                    .ignore()
                    .query_async(&mut connection)
                    .await;
                if let Err(e) = stored {
                    tracing::warn!(%e, "storing a gate verdict in Redis");
                }
            }
        }
    }

    /// Drops every verdict about `address` read before `now_ms` (its holdings just changed).
    pub async fn invalidate(&self, address: Address, now_ms: i64) {
        match self {
            Self::Memory(map) => {
                // The mark also stops a verdict being read right now from being kept; past
                // the capacity, only addresses already cached are marked.
                if let Ok(mut map) = map.lock() {
                    let room = map.len() < MEMORY_ADDRESSES;
                    let entry = if room {
                        Some(map.entry(address).or_default())
                    } else {
                        map.get_mut(&address)
                    };
                    if let Some(entry) = entry {
                        entry.verdicts.clear();
                        entry.invalidated_ms = now_ms;
                    }
                }
            }
            Self::Redis { connection, prefix } => {
                let mut connection = connection.clone();
                let hash = format!("{prefix}{address:#x}");
                let dropped: redis::RedisResult<()> = redis::pipe()
                    .atomic()
                    .del(&hash)
                    .ignore()
                    .hset(&hash, INVALIDATED, now_ms)
                    .ignore()
                    .pexpire(&hash, 86_400_000)
                    .ignore()
                    .query_async(&mut connection)
                    .await;
                if let Err(e) = dropped {
                    tracing::warn!(%e, "dropping gate verdicts from Redis");
                }
            }
        }
    }
}
