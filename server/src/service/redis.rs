//! One way to reach Redis: a reconnecting connection whose requests fail within seconds when
//! Redis is lost or hung, instead of holding the request that needed it.

use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Connects to `url`; an unreachable Redis is an error (it stops the start).
pub async fn connect(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(url).context("redis.url is not a Redis URL")?;
    let settings = ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    ConnectionManager::new_with_config(client, settings)
        .await
        .context("connecting to Redis (redis.url)")
}
