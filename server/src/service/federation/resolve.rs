//! Finding another server from its name, as the Server-Server API's discovery steps say: an
//! IP literal or explicit port is used as it is; otherwise `/.well-known/matrix/server` may
//! delegate, then SRV (`_matrix-fed._tcp`, then the deprecated `_matrix._tcp`), then port 8448.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::Duration,
};

use hickory_resolver::TokioResolver;
use ruma::ServerName;
use serde::Deserialize;

use super::client::{HttpFetch, Refused};

/// How long a finding is reused.
const CACHE_FOR: Duration = Duration::from_secs(3600);
/// How long a server that could not be found is not looked for again.
const FAILED_FOR: Duration = Duration::from_secs(60);
/// Most findings kept.
const CACHE_ENTRIES: usize = 10_000;
/// Longest wait for a well-known document.
const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest well-known document read.
const WELL_KNOWN_BYTES: usize = 64 * 1024;
/// The port servers listen on when nothing else says.
pub const DEFAULT_PORT: u16 = 8448;

/// Where to send requests for a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The name the certificate must carry (a host name or an IP address).
    pub tls_name: String,
    /// The port connected to.
    pub port: u16,
    /// The `Host` header: the server name, or the name it delegated to.
    pub host_header: String,
    /// Addresses to connect to (already checked against the address rules).
    pub addrs: Vec<SocketAddr>,
}

impl Destination {
    /// The base URL requests are made on (connecting to `addrs`, verifying `tls_name`).
    pub fn base_url(&self) -> String {
        match self.tls_name.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("https://[{v6}]:{}", self.port),
            _ => format!("https://{}:{}", self.tls_name, self.port),
        }
    }
}

#[derive(Deserialize)]
struct WellKnown {
    #[serde(rename = "m.server")]
    server: String,
}

/// What was found for a server (or why nothing was), and when.
type Finding = (Result<Destination, String>, std::time::Instant);

/// Finds servers and remembers what it found.
pub struct Resolver {
    dns: Option<TokioResolver>,
    cache: Mutex<HashMap<String, Finding>>,
}

/// `host` and `port` of `name`, when it names a port (`[::1]:8448`, `example.org:443`).
fn split_port(name: &str) -> (&str, Option<u16>) {
    if let Some(rest) = name.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, port)) => (host, port.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (name, None),
        };
    }
    match name.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
        _ => (name, None),
    }
}

impl Resolver {
    /// A resolver using the system's DNS configuration (SRV lookups are skipped without one).
    pub fn new() -> Self {
        let dns = match TokioResolver::builder_tokio() {
            Ok(builder) => Some(builder.build()),
            Err(error) => {
                tracing::warn!(%error, "no DNS configuration: SRV records will not be used");
                None
            }
        };
        Self {
            dns,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Where `server` is, from the cache or found now.
    pub async fn destination(
        &self,
        server: &ServerName,
        http: &HttpFetch,
    ) -> Result<Destination, String> {
        let now = std::time::Instant::now();
        if let Ok(cache) = self.cache.lock()
            && let Some((found, at)) = cache.get(server.as_str())
        {
            let ttl = if found.is_ok() { CACHE_FOR } else { FAILED_FOR };
            if now.duration_since(*at) < ttl {
                return found.clone();
            }
        }
        let found = self.find(server, http).await;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_ENTRIES {
                cache.retain(|_, (_, at)| now.duration_since(*at) < FAILED_FOR);
                if cache.len() >= CACHE_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(server.as_str().to_owned(), (found.clone(), now));
        }
        found
    }

    /// Forgets what was found for `server` (after its certificate or address failed).
    pub fn forget(&self, server: &ServerName) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(server.as_str());
        }
    }

    async fn find(&self, server: &ServerName, http: &HttpFetch) -> Result<Destination, String> {
        let name = server.as_str();
        let (host, port) = split_port(name);
        // 1 and 2: an IP literal, or a host name with an explicit port.
        if host.parse::<IpAddr>().is_ok() || port.is_some() {
            return self
                .direct(host, port.unwrap_or(DEFAULT_PORT), name, http)
                .await;
        }
        // 3: delegation by well-known.
        if let Some(delegated) = self.well_known(host, http).await {
            let (d_host, d_port) = split_port(&delegated);
            if d_host.parse::<IpAddr>().is_ok() || d_port.is_some() {
                return self
                    .direct(d_host, d_port.unwrap_or(DEFAULT_PORT), &delegated, http)
                    .await;
            }
            if let Some(found) = self.srv(d_host, http).await? {
                return Ok(found);
            }
            return self.direct(d_host, DEFAULT_PORT, d_host, http).await;
        }
        // 4 and 5: SRV for the server name itself, then port 8448.
        if let Some(found) = self.srv(host, http).await? {
            return Ok(found);
        }
        self.direct(host, DEFAULT_PORT, host, http).await
    }

    /// `host:port` resolved and checked; `host` is also the certificate's name.
    async fn direct(
        &self,
        host: &str,
        port: u16,
        host_header: &str,
        http: &HttpFetch,
    ) -> Result<Destination, String> {
        let addrs = http.checked_addresses(host, port).await.map_err(|r| r.0)?;
        Ok(Destination {
            tls_name: host.to_owned(),
            port,
            host_header: host_header.to_owned(),
            addrs,
        })
    }

    /// The `m.server` a host delegates to, if it says so.
    async fn well_known(&self, host: &str, http: &HttpFetch) -> Option<String> {
        let url = format!("https://{host}/.well-known/matrix/server");
        let body = match http
            .get(&url, host, 443, WELL_KNOWN_TIMEOUT, WELL_KNOWN_BYTES)
            .await
        {
            Ok(body) => body,
            Err(Refused(why)) => {
                tracing::debug!(%host, %why, "no well-known delegation");
                return None;
            }
        };
        let document: WellKnown = serde_json::from_slice(&body).ok()?;
        let delegated = document.server.trim().to_owned();
        // Only a server name may be delegated to (a host, optionally with a port).
        ServerName::parse(&delegated).ok()?;
        Some(delegated)
    }

    /// The SRV target for `host`, certificate still for `host`.
    async fn srv(&self, host: &str, http: &HttpFetch) -> Result<Option<Destination>, String> {
        let Some(dns) = &self.dns else {
            return Ok(None);
        };
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let Ok(Ok(records)) = tokio::time::timeout(
                WELL_KNOWN_TIMEOUT,
                dns.srv_lookup(format!("{service}.{host}.")),
            )
            .await
            else {
                continue;
            };
            let mut records: Vec<_> = records.iter().cloned().collect();
            records.sort_by_key(|r| (r.priority(), std::cmp::Reverse(r.weight())));
            for record in records {
                let target = record.target().to_utf8();
                let target = target.trim_end_matches('.');
                if target.is_empty() {
                    continue;
                }
                if let Ok(addrs) = http.checked_addresses(target, record.port()).await {
                    return Ok(Some(Destination {
                        tls_name: host.to_owned(),
                        port: record.port(),
                        host_header: host.to_owned(),
                        addrs,
                    }));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_split_from_names() {
        assert_eq!(split_port("example.org"), ("example.org", None));
        assert_eq!(split_port("example.org:443"), ("example.org", Some(443)));
        assert_eq!(split_port("1.2.3.4:8448"), ("1.2.3.4", Some(8448)));
        assert_eq!(split_port("[::1]:8448"), ("::1", Some(8448)));
        assert_eq!(split_port("[::1]"), ("::1", None));
    }
}
