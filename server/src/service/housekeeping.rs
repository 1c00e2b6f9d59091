//! Periodic clean-up of what would otherwise grow for ever: old notifications (read ones, and
//! those of users who left, go; unread ones are folded into a count per user and room),
//! expired nonces and forgotten vaults. Every instance runs it; each step is safe to overlap
//! with another instance's.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use super::Services;
use crate::http::error::Result;

/// How long a read notification stays listed by `GET /notifications` (Synapse keeps
/// highlights as long).
pub const NOTIFICATION_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a vault seen delegating to a member is remembered (longer than the longest
/// re-check interval, 30 days, so every sweep in between renews it).
const VAULT_RETENTION: Duration = Duration::from_secs(31 * 24 * 3600);
/// How long an unused sliding sync connection can still be continued (its client then starts
/// a new one, as after any expired position).
const SLIDING_CONNECTION_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long the ids of to-device messages from other servers are kept against repeats.
const TO_DEVICE_DEDUP_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the clean-up runs.
const EVERY: Duration = Duration::from_secs(3600);
/// Rows deleted per statement, so that no pass holds a long write lock.
const BATCH: i64 = 5_000;

impl Services {
    /// Removes notifications older than [`NOTIFICATION_RETENTION`]: read ones and those
    /// of users who left the room are deleted, unread ones folded into their room's count
    /// (which still shows them), and the counts nobody needs any more are deleted; how many
    /// rows went.
    pub async fn prune_notifications(&self) -> Result<u64> {
        let before = self.now_ms() - NOTIFICATION_RETENTION.as_millis() as i64;
        let pruned = in_batches(|| self.store.prune_push_actions(before, BATCH)).await?;
        let folded = in_batches(|| self.store.fold_push_actions(before, BATCH)).await?;
        Ok(pruned + folded + self.store.prune_push_summaries().await?)
    }

    /// Removes what expires: unused nonces (unauthenticated endpoints hand them out), OpenID
    /// tokens, vaults not seen delegating for longer than any gate's re-check interval, and
    /// sliding sync connections idle for a week, OAuth codes, browser sign-ins and spent
    /// refresh tokens past their time, week-old records of to-device messages from other
    /// servers (a server retries a transaction for less than that), and to-device messages
    /// and device-list updates for servers that have not taken them in a week.
    pub async fn prune_expired(&self) -> Result<u64> {
        let now = self.now_ms();
        let nonces =
            self.store.prune_nonces(now).await? + self.store.prune_openid_tokens(now).await?;
        let vaults = self
            .store
            .prune_gate_vaults(now - VAULT_RETENTION.as_millis() as i64)
            .await?;
        let connections = self
            .store
            .prune_sliding_positions(now - SLIDING_CONNECTION_RETENTION.as_millis() as i64)
            .await?;
        let oauth = self.store.prune_oauth(now).await?;
        let inbox = self
            .store
            .prune_to_device_inbox_seen(now - TO_DEVICE_DEDUP_RETENTION.as_millis() as i64)
            .await?;
        let edus = self
            .store
            .prune_edu_outbox(now - TO_DEVICE_DEDUP_RETENTION.as_millis() as i64)
            .await?;
        Ok(nonces + vaults + connections + oauth + inbox + edus)
    }
}

/// Runs `step` (which removes up to [`BATCH`] rows) until a batch comes back short; how many
/// rows went in all.
async fn in_batches<F, Fut>(mut step: F) -> Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<u64, sqlx::Error>>,
{
    let mut total = 0;
    loop {
        let gone = step().await?;
        total += gone;
        if gone < BATCH as u64 {
            return Ok(total);
        }
        // Let other writers in between batches (SQLite has one writer).
        tokio::task::yield_now().await;
    }
}

/// Runs the clean-up shortly after start and then hourly, until the server stops.
pub async fn run_background(
    services: Arc<Services>,
    stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    super::periodic::every(Duration::from_secs(60), EVERY, stopped, || async {
        match services.prune_notifications().await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "old notifications pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning old notifications failed"),
        }
        match services.prune_expired().await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "expired nonces and vaults pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning expired nonces and vaults failed"),
        }
    })
    .await
}
