//! Prometheus instruments and the middleware that feeds them.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use http::Method;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use matrixon_chain::rpc::{Chains, ProviderSnapshot};

use crate::service::Services;

/// The server's metrics, in their own registry (no global state).
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    db_connections: IntGauge,
    db_idle: IntGauge,
    /// Syncs parked waiting for news now.
    pub sync_waiting: IntGauge,
    /// Woken syncs by how they were answered: `log` (the shared recent events) or `full`.
    pub sync_woken: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every instrument.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("matrixon".to_owned()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route and method",
            ),
            &["route", "method"],
        )?;
        let db_connections = IntGauge::new("db_pool_connections", "Open database connections")?;
        let db_idle = IntGauge::new("db_pool_idle_connections", "Idle database connections")?;
        let sync_waiting = IntGauge::new("sync_waiting", "Syncs waiting for news now")?;
        let sync_woken = IntCounterVec::new(
            Opts::new(
                "sync_woken_total",
                "Woken syncs by how they were answered (log: from the shared recent events)",
            ),
            &["answer"],
        )?;
        registry.register(Box::new(sync_waiting.clone()))?;
        registry.register(Box::new(sync_woken.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(db_connections.clone()))?;
        registry.register(Box::new(db_idle.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            db_connections,
            db_idle,
            sync_waiting,
            sync_woken,
        })
    }

    /// Text exposition of everything, with the pool gauges and RPC provider counters read now.
    pub fn render(&self, pool_usage: (u32, usize), chains: &Chains) -> String {
        self.db_connections.set(i64::from(pool_usage.0));
        self.db_idle
            .set(i64::try_from(pool_usage.1).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(%err, "encoding metrics");
        }
        let mut text = String::from_utf8_lossy(&out).into_owned();
        render_providers(&mut text, chains);
        text
    }
}

/// A metric family: name, help text, and how to read its value from a snapshot.
type Family = (&'static str, &'static str, fn(&ProviderSnapshot) -> f64);

/// Per-provider RPC counters. Providers are labelled by position and host only: their URLs
/// often carry API keys, which must not reach a metrics system.
fn render_providers(out: &mut String, chains: &Chains) {
    use std::fmt::Write;
    let rows: Vec<(String, String, ProviderSnapshot)> = chains
        .iter()
        .flat_map(|chain| {
            chain
                .provider_stats()
                .into_iter()
                .enumerate()
                .map(|(i, stats)| {
                    let host = stats
                        .url
                        .split("://")
                        .nth(1)
                        .and_then(|r| r.split(['/', '?', '@']).next())
                        .unwrap_or("?");
                    let host: String = host
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(*c))
                        .collect();
                    (chain.caip2.clone(), format!("{i}:{host}"), stats)
                })
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let families: [Family; 3] = [
        (
            "matrixon_rpc_requests_total",
            "JSON-RPC attempts by chain and provider",
            |s| s.requests as f64,
        ),
        (
            "matrixon_rpc_errors_total",
            "Failed JSON-RPC attempts (transport error, timeout, rate limit)",
            |s| s.errors as f64,
        ),
        (
            "matrixon_rpc_latency_seconds_total",
            "Summed JSON-RPC attempt latency",
            |s| s.latency_us as f64 / 1e6,
        ),
    ];
    for (name, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (chain, provider, stats) in &rows {
            let _ = writeln!(
                out,
                "{name}{{chain=\"{chain}\",provider=\"{provider}\"}} {}",
                value(stats)
            );
        }
    }
}

/// Counts and times every request under its route template (never the raw path, whose
/// cardinality a client controls).
pub async fn track(
    State(services): State<Arc<Services>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Only standard methods become label values: a client must not mint new time series.
    let method = match *request.method() {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::OPTIONS
        | Method::PATCH => request.method().as_str().to_owned(),
        _ => "OTHER".to_owned(),
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = &services.metrics;
    metrics
        .latency
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .with_label_values(&[&route, &method, response.status().as_str()])
        .inc();
    response
}
