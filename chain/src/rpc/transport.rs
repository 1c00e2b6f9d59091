//! A JSON-RPC transport over several HTTP providers: failover, retries on rate limits,
//! per-attempt timeouts, a request-rate cap and per-provider statistics.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use alloy::{
    rpc::json_rpc::{RequestPacket, ResponsePacket},
    transports::{TransportError, TransportErrorKind, TransportFut, http::Http},
};
use tower::Service;

/// Attempts per provider for rate-limited answers (HTTP 429, JSON-RPC -32005).
const RATE_LIMIT_RETRIES: u32 = 3;
/// First back-off after a rate-limited answer; doubles on each retry.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Counters for one provider, for metrics.
#[derive(Debug, Default)]
pub struct ProviderStats {
    /// Attempts sent.
    pub requests: AtomicU64,
    /// Attempts that failed (transport error, timeout, rate limit).
    pub errors: AtomicU64,
    /// Sum of attempt latencies, in microseconds.
    pub latency_us: AtomicU64,
}

/// A point-in-time copy of one provider's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderSnapshot {
    /// The provider's URL.
    pub url: String,
    /// Attempts sent.
    pub requests: u64,
    /// Attempts that failed.
    pub errors: u64,
    /// Sum of attempt latencies, in microseconds.
    pub latency_us: u64,
}

/// A token bucket refilled at `rate` per second, capacity `rate` (one second's worth).
#[derive(Debug)]
struct RateCap {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateCap {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Time to wait before the next request may go out (zero when it may go now).
    fn reserve(&self) -> Duration {
        let Ok(mut state) = self.state.lock() else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens =
            (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate) - 1.0;
        *state = (tokens, now);
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.rate)
        }
    }
}

#[derive(Debug)]
struct Endpoint {
    url: String,
    http: Http<reqwest::Client>,
    cap: Option<RateCap>,
    stats: ProviderStats,
}

/// Tries each provider in order until one answers; see the module documentation.
#[derive(Clone, Debug)]
pub struct FailoverTransport {
    endpoints: Arc<Vec<Endpoint>>,
    timeout: Duration,
}

fn is_rate_limited(response: &ResponsePacket) -> bool {
    let codes: Vec<i64> = match response {
        ResponsePacket::Single(r) => r.payload.as_error().map(|e| e.code).into_iter().collect(),
        ResponsePacket::Batch(rs) => rs
            .iter()
            .filter_map(|r| r.payload.as_error().map(|e| e.code))
            .collect(),
    };
    codes.iter().any(|&code| code == -32005 || code == 429)
}

fn http_status(error: &TransportError) -> Option<u16> {
    match error.as_transport_err()? {
        TransportErrorKind::HttpError(e) => Some(e.status),
        TransportErrorKind::HttpErrorWithRetryAfter { error, .. } => Some(error.status),
        _ => None,
    }
}

impl FailoverTransport {
    /// A transport over `urls`, tried in order; each attempt gets `timeout`.
    pub fn new(urls: &[String], timeout: Duration, max_rps: Option<u32>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        let endpoints = urls
            .iter()
            .map(|url| {
                let parsed: reqwest::Url =
                    url.parse().map_err(|e| format!("RPC URL {url}: {e}"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(format!("RPC URL {url}: only http and https are supported"));
                }
                Ok(Endpoint {
                    url: url.clone(),
                    http: Http::with_client(client.clone(), parsed),
                    cap: max_rps.map(RateCap::new),
                    stats: ProviderStats::default(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        if endpoints.is_empty() {
            return Err("at least one RPC URL is needed".to_owned());
        }
        Ok(Self {
            endpoints: Arc::new(endpoints),
            timeout,
        })
    }

    /// Counters per provider, in configuration order.
    pub fn stats(&self) -> Vec<ProviderSnapshot> {
        self.endpoints
            .iter()
            .map(|e| ProviderSnapshot {
                url: e.url.clone(),
                requests: e.stats.requests.load(Ordering::Relaxed),
                errors: e.stats.errors.load(Ordering::Relaxed),
                latency_us: e.stats.latency_us.load(Ordering::Relaxed),
            })
            .collect()
    }

    async fn send(self, request: RequestPacket) -> Result<ResponsePacket, TransportError> {
        let mut last_error = TransportErrorKind::custom_str("no RPC provider answered");
        for endpoint in self.endpoints.iter() {
            let mut backoff = FIRST_BACKOFF;
            for attempt in 0..=RATE_LIMIT_RETRIES {
                if let Some(cap) = &endpoint.cap {
                    let wait = cap.reserve();
                    if wait >= self.timeout {
                        last_error = TransportErrorKind::custom_str(&format!(
                            "{}: request-rate cap",
                            endpoint.url
                        ));
                        break;
                    }
                    tokio::time::sleep(wait).await;
                }
                endpoint.stats.requests.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let mut http = endpoint.http.clone();
                let outcome = tokio::time::timeout(self.timeout, http.call(request.clone())).await;
                let elapsed = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                endpoint
                    .stats
                    .latency_us
                    .fetch_add(elapsed, Ordering::Relaxed);
                let rate_limited = match outcome {
                    Ok(Ok(response)) if !is_rate_limited(&response) => return Ok(response),
                    Ok(Ok(_)) => true,
                    Ok(Err(error)) => {
                        let limited = http_status(&error) == Some(429);
                        last_error = error;
                        limited
                    }
                    Err(_) => {
                        last_error =
                            TransportErrorKind::custom_str(&format!("{}: timed out", endpoint.url));
                        false
                    }
                };
                endpoint.stats.errors.fetch_add(1, Ordering::Relaxed);
                if !rate_limited {
                    break; // dead, hung or erroring: the next provider
                }
                last_error =
                    TransportErrorKind::custom_str(&format!("{}: rate limited", endpoint.url));
                if attempt < RATE_LIMIT_RETRIES {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
        Err(last_error)
    }
}

impl Service<RequestPacket> for FailoverTransport {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: RequestPacket) -> Self::Future {
        Box::pin(self.clone().send(request))
    }
}
