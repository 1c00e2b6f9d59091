//! Background jobs that run on a timer until the server stops.

use std::{future::Future, time::Duration};

use tokio::{
    sync::watch,
    time::{Instant, MissedTickBehavior},
};

/// Runs `job` after `first`, then every `period` (a late run delays the next rather than
/// bunching up), until `stopped` turns true or its sender goes.
pub async fn every<F, Fut>(
    first: Duration,
    period: Duration,
    mut stopped: watch::Receiver<bool>,
    mut job: F,
) -> std::io::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval_at(Instant::now() + first, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    return Ok(());
                }
            }
            _ = tick.tick() => job().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn runs_after_the_first_delay_then_each_period_until_stopped() {
        let runs = Arc::new(AtomicU32::new(0));
        let (stop, stopped) = watch::channel(false);
        let counted = runs.clone();
        let job = tokio::spawn(every(
            Duration::from_secs(60),
            Duration::from_secs(3600),
            stopped,
            move || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            },
        ));
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0, "not before the first delay");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "then once a period");
        stop.send(true).expect("the job listens");
        let ended = tokio::time::timeout(Duration::from_secs(1), job).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "stops when told");
    }
}
