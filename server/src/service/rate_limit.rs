//! Token buckets keyed by client IP or account, kept in memory per instance.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use crate::config::{Bucket, RateLimitsConfig};

/// Which limit a request is counted against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Login attempts from one address.
    LoginPerIp,
    /// Login attempts naming one account.
    LoginPerAccount,
    /// Registration attempts from one address.
    RegisterPerIp,
    /// Requests by one user that may reach a JSON-RPC provider or another web server.
    LookupsPerUser,
    /// Chain reads one user's gate dry runs may spend.
    ChainReadsPerUser,
    /// Reports one user sends.
    ReportsPerUser,
}

#[derive(Clone, Copy, Debug)]
struct State {
    tokens: f64,
    updated_ms: i64,
}

/// Buckets above this count are swept of full (idle) ones, bounding memory under spraying.
const SWEEP_ABOVE: usize = 10_000;

/// The rate limiter; cheap to consult, one short lock per check.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitsConfig,
    buckets: Mutex<HashMap<(Limit, String), State>>,
}

impl RateLimiter {
    /// A limiter with the configured bucket shapes.
    pub fn new(config: RateLimitsConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn shape(&self, limit: Limit) -> Bucket {
        match limit {
            Limit::LoginPerIp => self.config.login_per_ip,
            Limit::LoginPerAccount => self.config.login_per_account,
            Limit::RegisterPerIp => self.config.register_per_ip,
            Limit::LookupsPerUser => self.config.lookups_per_user,
            Limit::ChainReadsPerUser => self.config.chain_reads_per_user,
            Limit::ReportsPerUser => self.config.reports_per_user,
        }
    }

    /// Most tokens one request may take from a bucket of `limit` (no bound when rate
    /// limiting is off).
    pub fn capacity(&self, limit: Limit) -> u32 {
        if self.config.enabled {
            self.shape(limit).burst
        } else {
            u32::MAX
        }
    }

    /// Takes one token from the bucket of `key`, or says how long until one is available.
    pub fn check(&self, limit: Limit, key: &str, now_ms: i64) -> Result<(), Duration> {
        self.take(limit, key, 1, now_ms)
    }

    /// Takes `cost` tokens from the bucket of `key` (at most [`Self::capacity`]), or says
    /// how long until that many are available.
    pub fn take(&self, limit: Limit, key: &str, cost: u32, now_ms: i64) -> Result<(), Duration> {
        if !self.config.enabled {
            return Ok(());
        }
        let shape = self.shape(limit);
        let cost = f64::from(cost.min(shape.burst));
        let burst = f64::from(shape.burst);
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() > SWEEP_ABOVE {
            buckets.retain(|(l, _), s| {
                let b = self.shape(*l);
                s.tokens + (now_ms - s.updated_ms) as f64 / 1000.0 * b.per_second
                    < f64::from(b.burst)
            });
        }
        let state = buckets.entry((limit, key.to_owned())).or_insert(State {
            tokens: burst,
            updated_ms: now_ms,
        });
        let elapsed_s = (now_ms - state.updated_ms).max(0) as f64 / 1000.0;
        state.tokens = (state.tokens + elapsed_s * shape.per_second).min(burst);
        state.updated_ms = now_ms;
        if state.tokens >= cost {
            state.tokens -= cost;
            Ok(())
        } else {
            let wait_s = (cost - state.tokens) / shape.per_second;
            Err(Duration::from_millis((wait_s * 1000.0).ceil() as u64))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(enabled: bool) -> RateLimiter {
        let bucket = Bucket {
            per_second: 0.5,
            burst: 2,
        };
        RateLimiter::new(RateLimitsConfig {
            enabled,
            login_per_ip: bucket,
            login_per_account: bucket,
            register_per_ip: bucket,
            lookups_per_user: bucket,
            reports_per_user: bucket,
            chain_reads_per_user: Bucket {
                per_second: 10.0,
                burst: 100,
            },
        })
    }

    #[test]
    fn bucket_empties_then_refills() {
        let l = limiter(true);
        assert!(l.check(Limit::LoginPerIp, "1.2.3.4", 0).is_ok());
        assert!(l.check(Limit::LoginPerIp, "1.2.3.4", 0).is_ok());
        let wait = l.check(Limit::LoginPerIp, "1.2.3.4", 0).expect_err("empty");
        assert_eq!(wait, Duration::from_millis(2000));
        // Other keys and other limits have their own buckets.
        assert!(l.check(Limit::LoginPerIp, "5.6.7.8", 0).is_ok());
        assert!(l.check(Limit::RegisterPerIp, "1.2.3.4", 0).is_ok());
        assert!(l.check(Limit::LoginPerIp, "1.2.3.4", 1000).is_err());
        assert!(l.check(Limit::LoginPerIp, "1.2.3.4", 2000).is_ok());
    }

    #[test]
    fn costly_requests_take_as_many_tokens() {
        let l = limiter(true);
        assert!(l.take(Limit::ChainReadsPerUser, "@a:x", 60, 0).is_ok());
        let wait = l
            .take(Limit::ChainReadsPerUser, "@a:x", 60, 0)
            .expect_err("40 left");
        assert_eq!(wait, Duration::from_millis(2000));
        assert!(l.take(Limit::ChainReadsPerUser, "@a:x", 60, 2000).is_ok());
        assert_eq!(l.capacity(Limit::ChainReadsPerUser), 100);
    }

    #[test]
    fn disabled_limiter_never_refuses() {
        let l = limiter(false);
        for _ in 0..100 {
            assert!(l.check(Limit::LoginPerIp, "x", 0).is_ok());
        }
    }
}
