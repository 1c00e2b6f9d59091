//! Outbound HTTP for federation under the address rules: only public addresses (or ranges
//! the operator allowed) are connected to, the address checked is the one connected to, no
//! proxy, no redirects, and every request has a time and size limit.

use std::{collections::HashMap, net::SocketAddr, sync::Mutex, time::Duration};

use super::{IpRange, resolve::Destination};

/// Longest wait for a connection and its TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most HTTP clients (one per destination address) kept.
const CLIENTS: usize = 2_000;

/// Why a request was not answered.
#[derive(Clone, Debug)]
pub struct Refused(pub String);

/// Makes requests to other servers.
pub struct HttpFetch {
    allow: Vec<IpRange>,
    roots: Vec<reqwest::Certificate>,
    clients: Mutex<HashMap<(String, SocketAddr), reqwest::Client>>,
}

impl HttpFetch {
    /// A fetcher trusting the system's certificate authorities plus `roots`, reaching
    /// non-public addresses only within `allow`.
    pub fn new(allow: Vec<IpRange>, roots: Vec<reqwest::Certificate>) -> Self {
        Self {
            allow,
            roots,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `addr` may be connected to.
    fn allowed(&self, addr: &SocketAddr) -> bool {
        matrixon_chain::ens::is_public(addr.ip())
            || self.allow.iter().any(|r| r.contains(addr.ip()))
    }

    /// The addresses of `host` that may be connected to.
    pub async fn checked_addresses(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, Refused> {
        let found: Vec<SocketAddr> =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| Refused(format!("{host}: name lookup timed out")))?
                .map_err(|e| Refused(format!("{host}: {e}")))?
                .collect();
        let allowed: Vec<SocketAddr> = found.iter().filter(|a| self.allowed(a)).copied().collect();
        if allowed.is_empty() {
            return Err(Refused(if found.is_empty() {
                format!("{host} has no address")
            } else {
                format!(
                    "{host} is on a private, loopback or link-local address (see federation.ip_range_allow)"
                )
            }));
        }
        Ok(allowed)
    }

    /// The client that connects to `addr` for `tls_name`.
    fn client(
        &self,
        tls_name: &str,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<reqwest::Client, Refused> {
        let key = (tls_name.to_owned(), addr);
        if let Ok(clients) = self.clients.lock()
            && let Some(client) = clients.get(&key)
        {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("matrixon/", env!("CARGO_PKG_VERSION")));
        // An IP address needs no name lookup; a host name is pinned to the checked address.
        if tls_name.parse::<std::net::IpAddr>().is_err() {
            builder = builder.resolve(tls_name, addr);
        }
        for root in &self.roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let client = builder
            .build()
            .map_err(|e| Refused(format!("building an HTTP client: {e}")))?;
        if let Ok(mut clients) = self.clients.lock() {
            if clients.len() >= CLIENTS {
                clients.clear();
            }
            clients.insert(key, client.clone());
        }
        Ok(client)
    }

    /// A GET of `url` on `host:port` (a well-known document): the body, at most `max_bytes`.
    pub async fn get(
        &self,
        url: &str,
        host: &str,
        port: u16,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Vec<u8>, Refused> {
        let addrs = self.checked_addresses(host, port).await?;
        let request = http::Request::get(url)
            .body(Vec::new())
            .map_err(|e| Refused(e.to_string()))?;
        let destination = Destination {
            tls_name: host.to_owned(),
            port,
            host_header: host.to_owned(),
            addrs,
        };
        let response = self.send(&destination, request, timeout, max_bytes).await?;
        if !response.status().is_success() {
            return Err(Refused(format!("{url} answered {}", response.status())));
        }
        Ok(response.into_body())
    }

    /// Sends `request` to `destination`, trying its addresses in turn until one connects.
    pub async fn send(
        &self,
        destination: &Destination,
        request: http::Request<Vec<u8>>,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<http::Response<Vec<u8>>, Refused> {
        let (parts, body) = request.into_parts();
        let mut last = Refused(format!("{} has no address", destination.tls_name));
        for addr in destination.addrs.iter().take(3) {
            if !self.allowed(addr) {
                continue;
            }
            let client = self.client(&destination.tls_name, *addr, timeout)?;
            let url = parts.uri.to_string();
            let mut outgoing = client
                .request(parts.method.clone(), &url)
                .timeout(timeout)
                .headers(parts.headers.clone())
                .header(http::header::HOST, &destination.host_header);
            if !body.is_empty() {
                outgoing = outgoing
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let mut response = match outgoing.send().await {
                Ok(response) => response,
                Err(error) if error.is_connect() => {
                    last = Refused(format!("{}: {}", destination.tls_name, error.without_url()));
                    continue;
                }
                Err(error) if error.is_timeout() => {
                    return Err(Refused(format!(
                        "{}: timed out after {timeout:?}",
                        destination.tls_name
                    )));
                }
                Err(error) => {
                    return Err(Refused(format!(
                        "{}: {}",
                        destination.tls_name,
                        error.without_url()
                    )));
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            let mut bytes = Vec::new();
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        if bytes.len() + chunk.len() > max_bytes {
                            return Err(Refused(format!(
                                "{} answered more than {max_bytes} bytes",
                                destination.tls_name
                            )));
                        }
                        bytes.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(error) => {
                        return Err(Refused(format!(
                            "{}: {}",
                            destination.tls_name,
                            error.without_url()
                        )));
                    }
                }
            }
            let mut answer = http::Response::new(bytes);
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            return Ok(answer);
        }
        Err(last)
    }
}
