//! Periodic clean-up of what would otherwise grow for ever: old notifications that no unread
//! count needs. Every instance runs it; the deletes are idempotent, so several may overlap.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use super::Services;
use crate::http::error::Result;

/// How long a read notification stays listed by `GET /notifications` (Synapse keeps
/// highlights as long).
pub const NOTIFICATION_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often the clean-up runs.
const EVERY: Duration = Duration::from_secs(3600);
/// Rows deleted per statement, so that no pass holds a long write lock.
const BATCH: i64 = 5_000;

impl Services {
    /// Deletes notifications older than [`NOTIFICATION_RETENTION`] that are read or whose
    /// user left the room (unread ones still count); how many went.
    pub async fn prune_notifications(&self) -> Result<u64> {
        let before = self.now_ms() - NOTIFICATION_RETENTION.as_millis() as i64;
        let mut total = 0;
        loop {
            let deleted = self.store.prune_push_actions(before, BATCH).await?;
            total += deleted;
            if deleted < BATCH as u64 {
                return Ok(total);
            }
            // Let other writers in between batches (SQLite has one writer).
            tokio::task::yield_now().await;
        }
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
    })
    .await
}
