//! Fair push delivery: how many notifications may be in flight at once — overall, to one
//! gateway host and for one user — and which hosts are paused because they keep failing.
//! A delivery holds its slots only while a request is out; retries wait without them, so a
//! gateway that never answers slows only the pushers that point at it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

/// Requests to push gateways in flight at once, across all users and hosts.
pub const MAX_IN_FLIGHT: usize = 32;
/// Requests in flight to one gateway host (`host:port`).
pub const MAX_PER_HOST: usize = 8;
/// Requests in flight for one user's pushers.
pub const MAX_PER_USER: usize = 2;
/// Deliveries waiting or in flight; past this, new ones are dropped (push is best effort and
/// must not grow without bound behind a slow gateway).
pub const MAX_PENDING: usize = 10_000;
/// Consecutive failures (time-outs, refused connections, 5xx) after which a host is paused.
pub const FAILURES_BEFORE_PAUSE: u32 = 3;
/// The first pause; doubled with every failure after it, up to [`LONGEST_PAUSE`].
pub const FIRST_PAUSE: Duration = Duration::from_secs(60);
/// The longest a host is paused.
pub const LONGEST_PAUSE: Duration = Duration::from_secs(3600);
/// Hosts and users remembered before idle ones are forgotten.
const REMEMBERED: usize = 10_000;

#[derive(Debug)]
struct Host {
    slots: Arc<Semaphore>,
    failures: u32,
    paused_until: Option<Instant>,
}

impl Host {
    fn paused(&self) -> bool {
        self.paused_until
            .is_some_and(|until| until > Instant::now())
    }
}

impl Default for Host {
    fn default() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(MAX_PER_HOST)),
            failures: 0,
            paused_until: None,
        }
    }
}

/// Slots held while one request is out.
#[derive(Debug)]
pub struct Slot {
    _user: OwnedSemaphorePermit,
    _host: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

/// The lanes every delivery of this process goes through.
#[derive(Debug)]
pub struct PushLanes {
    all: Arc<Semaphore>,
    pending: Arc<Semaphore>,
    hosts: Mutex<HashMap<String, Host>>,
    users: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Default for PushLanes {
    fn default() -> Self {
        Self {
            all: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
            hosts: Mutex::default(),
            users: Mutex::default(),
        }
    }
}

impl PushLanes {
    /// A place in the queue for one delivery, held until it ends; `None` when the queue is
    /// full.
    pub fn enqueue(&self) -> Option<OwnedSemaphorePermit> {
        self.pending.clone().try_acquire_owned().ok()
    }

    /// Waits for a user's, a host's and an overall slot, in that order; `None` at once (and
    /// again once the slots are had) while the host is paused.
    pub async fn slot(&self, host: &str, user: &str) -> Option<Slot> {
        let (host_slots, user_slots) = {
            let host_slots = self.with_host(host, |h| (!h.paused()).then(|| h.slots.clone()))?;
            let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            if users.len() >= REMEMBERED {
                users.retain(|_, s| Arc::strong_count(s) > 1);
            }
            let user_slots = users
                .entry(user.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(MAX_PER_USER)))
                .clone();
            (host_slots, user_slots)
        };
        // The semaphores are never closed, so acquiring cannot fail.
        let user = user_slots.acquire_owned().await.ok()?;
        let host_slot = host_slots.acquire_owned().await.ok()?;
        let all = self.all.clone().acquire_owned().await.ok()?;
        if self.with_host(host, |h| h.paused()) {
            return None;
        }
        Some(Slot {
            _user: user,
            _host: host_slot,
            _all: all,
        })
    }

    /// Records how a request to `host` went: a success clears its failures; a failure may
    /// pause it.
    pub fn record(&self, host: &str, succeeded: bool) {
        let now = Instant::now();
        self.with_host(host, |h| {
            if succeeded {
                h.failures = 0;
                h.paused_until = None;
                return;
            }
            h.failures = h.failures.saturating_add(1);
            if h.failures >= FAILURES_BEFORE_PAUSE {
                let doublings = (h.failures - FAILURES_BEFORE_PAUSE).min(16);
                let pause = FIRST_PAUSE
                    .saturating_mul(1 << doublings)
                    .min(LONGEST_PAUSE);
                if h.paused_until.is_none_or(|until| until <= now) {
                    tracing::warn!(host, failures = h.failures, ?pause, "push gateway paused");
                }
                h.paused_until = Some(now + pause);
            }
        });
    }

    fn with_host<T>(&self, host: &str, f: impl FnOnce(&mut Host) -> T) -> T {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if hosts.len() >= REMEMBERED && !hosts.contains_key(host) {
            let now = Instant::now();
            hosts.retain(|_, h| {
                Arc::strong_count(&h.slots) > 1 || h.paused_until.is_some_and(|u| u > now)
            });
        }
        f(hosts.entry(host.to_owned()).or_default())
    }
}

/// The lane key of a gateway URL: `host:port`.
pub fn host_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    Some(format!(
        "{}:{}",
        parsed.host_str()?,
        parsed.port_or_known_default()?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failing_host_is_paused_and_others_are_not() {
        let lanes = PushLanes::default();
        for _ in 0..FAILURES_BEFORE_PAUSE {
            assert!(lanes.slot("dead:443", "@a:x").await.is_some());
            lanes.record("dead:443", false);
        }
        assert!(lanes.slot("dead:443", "@b:x").await.is_none(), "paused");
        assert!(lanes.slot("live:443", "@b:x").await.is_some());
        // After the pause it is tried again; another failure pauses it twice as long.
        tokio::time::advance(FIRST_PAUSE).await;
        assert!(lanes.slot("dead:443", "@a:x").await.is_some());
        lanes.record("dead:443", false);
        tokio::time::advance(FIRST_PAUSE).await;
        assert!(lanes.slot("dead:443", "@a:x").await.is_none());
        tokio::time::advance(FIRST_PAUSE).await;
        assert!(lanes.slot("dead:443", "@a:x").await.is_some());
        lanes.record("dead:443", true);
        lanes.record("dead:443", false);
        assert!(
            lanes.slot("dead:443", "@a:x").await.is_some(),
            "a success resets"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_user_cannot_take_every_slot() {
        let lanes = Arc::new(PushLanes::default());
        let mut held = Vec::new();
        for _ in 0..MAX_PER_USER {
            held.push(lanes.slot("a:443", "@greedy:x").await.expect("slot"));
        }
        let waiting = {
            let lanes = lanes.clone();
            tokio::spawn(async move { lanes.slot("b:443", "@greedy:x").await.is_some() })
        };
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "a third slot for the same user waits"
        );
        assert!(lanes.slot("a:443", "@other:x").await.is_some());
        drop(held);
        assert!(waiting.await.expect("task"));
    }

    #[test]
    fn lanes_are_host_and_port() {
        assert_eq!(
            host_of("https://push.example/_matrix/push/v1/notify").as_deref(),
            Some("push.example:443")
        );
        assert_eq!(
            host_of("http://127.0.0.1:8080/_matrix/push/v1/notify").as_deref(),
            Some("127.0.0.1:8080")
        );
    }
}
