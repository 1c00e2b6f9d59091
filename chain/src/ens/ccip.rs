//! EIP-3668 CCIP-Read: asking the gateway a resolver names, without letting a name point the
//! server at its own network. Gateways on private, loopback, link-local (cloud metadata) or
//! otherwise non-public addresses are refused unless allow-listed; the address checked is the
//! address connected to, so DNS cannot swap it afterwards.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use alloy::primitives::{Address, Bytes};
use serde::Deserialize;

/// Limits and the allow-list for requests that outside data makes the server send
/// (CCIP-Read gateways, did:web documents, URL previews).
#[derive(Clone, Debug)]
pub struct Gateway {
    /// `host` or `host:port` entries that may be private or plain http (tests, internal gateways).
    pub allow: Vec<String>,
    /// Per-request time limit.
    pub timeout: Duration,
    /// Largest answer read, in bytes.
    pub max_bytes: usize,
    /// Certificate authorities trusted besides the system's (a private PKI, or tests).
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl Default for Gateway {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            timeout: Duration::from_secs(5),
            max_bytes: 256 * 1024,
            extra_roots: Vec::new(),
        }
    }
}

/// Longest wait for a connection (and its TLS handshake): a host that does not take one
/// that fast is not going to answer in time either.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How a refusal for the address ends, so callers can tell it from a failed fetch.
pub const REFUSED_ADDRESS: &str = "is on a private, loopback or link-local address: refused";

#[derive(Deserialize)]
struct Answer {
    data: String,
}

/// Whether an address is reachable from the public internet (and so safe to fetch). IPv6 must
/// be global unicast (2000::/3) and not an address that tunnels to IPv4 (6to4 is judged by
/// the IPv4 address inside; Teredo is refused).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public_v4(v4);
            }
            let segments = v6.segments();
            let global_unicast = (segments[0] & 0xe000) == 0x2000;
            if !global_unicast {
                return false; // loopback, unspecified, ULA, link/site-local, NAT64, multicast…
            }
            match segments[0] {
                // 6to4: the IPv4 address is in segments 1–2.
                0x2002 => public_v4(Ipv4Addr::new(
                    (segments[1] >> 8) as u8,
                    segments[1] as u8,
                    (segments[2] >> 8) as u8,
                    segments[2] as u8,
                )),
                // Teredo (2001:0::/32) and documentation (2001:db8::/32).
                0x2001 => !(segments[1] == 0 || segments[1] == 0x0db8),
                _ => true,
            }
        }
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local() // 169.254.0.0/16, cloud metadata among them
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

/// Certificates from a PEM bundle, for [`Gateway::extra_roots`].
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, String> {
    reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))
}

impl Gateway {
    /// Fetches the answer to `call_data` from the first of `urls` that gives one (EIP-3668:
    /// `{sender}` and `{data}` substituted; GET when the URL has `{data}`, else POST).
    pub async fn fetch(
        &self,
        urls: &[String],
        sender: Address,
        call_data: &Bytes,
    ) -> Result<Bytes, String> {
        let sender = format!("{sender:#x}");
        let data = call_data.to_string();
        let mut last = "the resolver named no gateway".to_owned();
        for template in urls.iter().take(4) {
            match self.fetch_one(template, &sender, &data).await {
                Ok(bytes) => return Ok(bytes),
                Err((stop, why)) => {
                    last = why;
                    if stop {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    /// One gateway; `Err((true, _))` when the gateway answered with a client error (no
    /// other gateway is tried, per EIP-3668).
    async fn fetch_one(
        &self,
        template: &str,
        sender: &str,
        data: &str,
    ) -> Result<Bytes, (bool, String)> {
        let url = template.replace("{sender}", sender).replace("{data}", data);
        let body = (!template.contains("{data}"))
            .then(|| serde_json::json!({"sender": sender, "data": data}));
        let answer = self.request(&url, body).await?;
        let answer: Answer = serde_json::from_slice(&answer).map_err(|e| {
            (
                false,
                format!("gateway {url} answered no {{\"data\"}}: {e}"),
            )
        })?;
        answer.data.parse().map_err(|_| {
            (
                false,
                format!("gateway {url} answered data that is not hex"),
            )
        })
    }

    /// A JSON document over https from a public address (or an allow-listed host).
    pub async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let body = self.request(url, None).await.map_err(|(_, why)| why)?;
        serde_json::from_slice(&body).map_err(|e| format!("{url} is not JSON: {e}"))
    }

    /// A web page or image (for a URL preview): http or https, each of at most 3 redirects
    /// checked like the first address. `(content type, body)`.
    pub async fn get_page(&self, url: &str) -> Result<(Option<String>, Vec<u8>), String> {
        let mut url = url.to_owned();
        for _ in 0..4 {
            match self.send(&url, None, true).await.map_err(|(_, why)| why)? {
                Reply::Body(content_type, body) => return Ok((content_type, body)),
                Reply::Redirect(next) => url = next,
            }
        }
        Err("more than 3 redirects".to_owned())
    }

    /// POSTs JSON under the rules (https unless allow-listed, public addresses unless
    /// allow-listed, no redirects, no proxy, time and size limits): the answer, or the HTTP
    /// status (when there was one) and why not.
    pub async fn post_json(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<Vec<u8>, (Option<u16>, String)> {
        match self.send(url, Some(body.clone()), false).await {
            Ok(Reply::Body(_, body)) => Ok(body),
            Ok(Reply::Redirect(_)) => Err((None, format!("{url} redirected: not followed"))),
            Err((_, why)) => {
                let status = why
                    .rsplit_once(" answered ")
                    .and_then(|(_, s)| s.split(' ').next())
                    .and_then(|s| s.parse().ok());
                Err((status, why))
            }
        }
    }

    async fn request(
        &self,
        url: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Vec<u8>, (bool, String)> {
        match self.send(url, body, false).await? {
            Reply::Body(_, body) => Ok(body),
            Reply::Redirect(_) => Err((false, format!("{url} redirected: not followed"))),
        }
    }

    /// GET (or POST `body`) under the rules: https unless allow-listed (or a `page`), the
    /// address connected to must be public unless allow-listed, time and size limits;
    /// redirects are handed back only for a `page`. `Err((true, _))` for a 4xx answer.
    async fn send(
        &self,
        url: &str,
        body: Option<serde_json::Value>,
        page: bool,
    ) -> Result<Reply, (bool, String)> {
        let parsed = url::Url::parse(url).map_err(|e| (false, format!("{url}: {e}")))?;
        let host = parsed
            .host_str()
            .ok_or((false, format!("{url} has no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let allowed = self
            .allow
            .iter()
            .any(|a| *a == host || *a == format!("{host}:{port}"));
        if parsed.scheme() != "https" && !((allowed || page) && parsed.scheme() == "http") {
            return Err((false, format!("{url}: only https is fetched")));
        }
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(self.timeout, tokio::net::lookup_host((host.as_str(), port)))
                .await
                .map_err(|_| (false, format!("host {host}: name lookup timed out")))?
                .map_err(|e| (false, format!("host {host}: {e}")))?
                .collect();
        let Some(target) = addrs.iter().find(|a| allowed || is_public(a.ip())).copied() else {
            return Err((false, format!("{host} {REFUSED_ADDRESS}")));
        };
        // No proxy: a proxy would resolve the host itself, past the address check.
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.timeout.min(CONNECT_TIMEOUT))
            .timeout(self.timeout)
            .resolve(&host, target);
        for root in &self.extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let client = builder.build().map_err(|e| (false, e.to_string()))?;
        let request = match body {
            Some(body) => client.post(parsed.clone()).json(&body),
            None => client.get(parsed.clone()),
        };
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                (false, format!("{host}: timed out after {:?}", self.timeout))
            } else {
                (false, format!("{host}: {}", e.without_url()))
            }
        };
        let mut response = request.send().await.map_err(failed)?;
        let status = response.status();
        if page && status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| parsed.join(l).ok())
                .ok_or((false, format!("{host} redirected nowhere")))?;
            return Ok(Reply::Redirect(location.to_string()));
        }
        if !status.is_success() {
            return Err((
                status.is_client_error(),
                format!("{host} answered {status}"),
            ));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // A page is a web page or an image: anything else is not read at all, and a long
        // web page is read up to the limit (its head, where previews look, comes first).
        let essence = content_type
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let html = essence.starts_with("text/html") || essence.starts_with("application/xhtml");
        // (Untyped content may still be an image: IPFS gateways often say octet-stream.)
        let maybe_image = essence.starts_with("image/")
            || essence.is_empty()
            || essence.starts_with("application/octet-stream");
        if page && !html && !maybe_image {
            return Err((
                false,
                format!("{host} answered neither a web page nor an image"),
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            body.extend_from_slice(&chunk);
            if page && html && body.len() > self.max_bytes {
                body.truncate(self.max_bytes);
                break;
            }
            if body.len() > self.max_bytes {
                return Err((
                    false,
                    format!("{host} answered more than {} bytes", self.max_bytes),
                ));
            }
        }
        Ok(Reply::Body(content_type, body))
    }
}

/// What one request got: a body (with its content type) or where to go next.
enum Reply {
    Body(Option<String>, Vec<u8>),
    Redirect(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_metadata_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "fd00:ec2::254",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "2002:0101:0101::1",
        ] {
            assert!(is_public(ip.parse().expect("ip")), "{ip}");
        }
    }
}
