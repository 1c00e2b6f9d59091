//! Talking to other Matrix servers: finding them, signing what is sent to them, and checking
//! the signatures on what they send.

mod acl;
mod backfill;
mod client;
mod devices;
mod directory;
mod gaps;
mod history;
mod invites;
mod joins;
mod keys;
mod memberships;
mod pdu;
mod ranges;
mod resolve;
mod spaces;
mod transactions;

use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use ruma::{
    OwnedServerName, ServerName,
    api::{
        IncomingResponse, OutgoingRequest,
        federation::authentication::{ServerSignatures, ServerSignaturesInput, XMatrix},
    },
    signatures::PublicKeyMap,
};

pub use history::{Walk, raw_pdu};
pub use joins::JoinedState;
pub use ranges::IpRange;
pub use resolve::{DEFAULT_PORT, Destination};
pub use transactions::{MAX_EDUS, MAX_PDUS, run_sender};

use crate::{config::FederationConfig, service::Services};

/// Largest answer read from another server unless an endpoint says otherwise.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Why a request to or from another server failed.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// Federation is off here.
    #[error("federation is disabled on this server")]
    Disabled,
    /// The server could not be found or reached, or did not answer in time.
    #[error("{0}")]
    Unreachable(String),
    /// It answered something that is not what the endpoint returns.
    #[error("{0}")]
    BadResponse(String),
    /// It answered with a Matrix error.
    #[error("{server} answered {status}: {body}")]
    Remote {
        /// Who answered.
        server: OwnedServerName,
        /// The HTTP status.
        status: http::StatusCode,
        /// The error body, as sent.
        body: String,
    },
    /// A signature or key did not check out.
    #[error("{0}")]
    Unauthorized(String),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
    /// Building or signing a request failed.
    #[error("{0}")]
    Internal(String),
}

/// What federation keeps between requests.
pub struct Federation {
    http: client::HttpFetch,
    resolver: resolve::Resolver,
    keys: keys::KeyCache,
    timeout: Duration,
    /// Woken when events are queued for other servers.
    outbox_wake: tokio::sync::Notify,
    /// EDUs waiting for their destination's next transaction (kept in memory only).
    edus: std::sync::Mutex<std::collections::HashMap<String, Vec<serde_json::Value>>>,
    /// This instance's name in sender leases (several instances share one database).
    pub(crate) sender_id: String,
    /// Rooms whose history other servers had nothing more of, lately.
    quiet: backfill::QuietRooms,
}

/// `request` (a path-only URI) made absolute on `destination`'s base URL.
fn on_base(
    request: http::Request<Vec<u8>>,
    destination: &resolve::Destination,
) -> Result<http::Request<Vec<u8>>, http::uri::InvalidUri> {
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = format!("{}{path}", destination.base_url()).parse()?;
    Ok(http::Request::from_parts(parts, body))
}

impl Federation {
    /// Sends `request` (a path-only URI) over HTTPS to `server` taken literally — its host
    /// and port (443 when none), no delegation — under the address rules: the answer (any
    /// status), at most `max_bytes`. For servers that are not homeservers (identity servers).
    pub(crate) async fn https_direct(
        &self,
        server: &ServerName,
        request: http::Request<Vec<u8>>,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<http::Response<Vec<u8>>, String> {
        let host = server.host().trim_start_matches('[').trim_end_matches(']');
        let port = server.port().unwrap_or(443);
        let addrs = self
            .http
            .checked_addresses(host, port)
            .await
            .map_err(|refused| refused.0)?;
        let destination = resolve::Destination {
            tls_name: host.to_owned(),
            port,
            host_header: server.to_string(),
            addrs,
        };
        let request = on_base(request, &destination).map_err(|e| e.to_string())?;
        self.http
            .send(&destination, request, timeout, max_bytes)
            .await
            .map_err(|refused| refused.0)
    }

    /// A GET of an https `url` on `host:port` under the address rules (a file another
    /// server's media answer points to): the body, at most `max_bytes`.
    pub(crate) async fn https_get(
        &self,
        url: &str,
        host: &str,
        port: u16,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Vec<u8>, String> {
        self.http
            .get(url, host, port, timeout, max_bytes)
            .await
            .map_err(|refused| refused.0)
    }

    /// Queues `edu` for each of `servers` and wakes the sender.
    pub(crate) fn send_edu<'a>(
        &self,
        servers: impl IntoIterator<Item = &'a str>,
        edu: &serde_json::Value,
    ) {
        let mut any = false;
        for server in servers {
            self.queue_edu(server, edu.clone());
            any = true;
        }
        if any {
            self.outbox_wake.notify_one();
        }
    }

    /// Queues `edu` for `destination`, the oldest dropped past [`MAX_EDUS`].
    pub(crate) fn queue_edu(&self, destination: &str, edu: serde_json::Value) {
        if let Ok(mut edus) = self.edus.lock() {
            if edus.len() >= 10_000 && !edus.contains_key(destination) {
                return;
            }
            let queue = edus.entry(destination.to_owned()).or_default();
            if queue.len() >= MAX_EDUS {
                queue.remove(0);
            }
            queue.push(edu);
        }
    }

    /// The EDUs queued for `destination`, taken.
    pub(crate) fn take_edus(&self, destination: &str) -> Vec<serde_json::Value> {
        self.edus
            .lock()
            .ok()
            .and_then(|mut edus| edus.remove(destination))
            .unwrap_or_default()
    }

    /// Destinations with EDUs waiting.
    pub(crate) fn edu_destinations(&self) -> Vec<String> {
        self.edus
            .lock()
            .map(|edus| edus.keys().cloned().collect())
            .unwrap_or_default()
    }
}

impl Federation {
    /// Built from the configuration (its CIDR ranges and CA file were validated at load; a
    /// CA file that cannot be read is an error here).
    pub fn new(config: &FederationConfig) -> anyhow::Result<Self> {
        let allow = config
            .ip_range_allow
            .iter()
            .map(|r| IpRange::parse(r).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let roots = match &config.extra_ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("federation.extra_ca_file {path}: {e}"))?;
                matrixon_chain::ens::certificates_from_pem(&pem)
                    .map_err(|e| anyhow::anyhow!("federation.extra_ca_file {path}: {e}"))?
            }
            None => Vec::new(),
        };
        Ok(Self {
            http: client::HttpFetch::new(allow, roots),
            resolver: resolve::Resolver::new(),
            keys: keys::KeyCache::default(),
            timeout: Duration::from_millis(config.request_timeout_ms),
            outbox_wake: tokio::sync::Notify::new(),
            edus: std::sync::Mutex::default(),
            sender_id: crate::service::secrets::random_alphanumeric(16),
            quiet: backfill::QuietRooms::default(),
        })
    }
}

impl Services {
    /// Sends `request` (a path-only URI; signed when `signed`) to `server`: the body of a 2xx
    /// answer, at most `max_bytes`.
    pub async fn federation_raw(
        &self,
        server: &ServerName,
        request: http::Request<Vec<u8>>,
        signed: bool,
        max_bytes: usize,
    ) -> Result<Vec<u8>, FederationError> {
        self.federation_response(server, request, signed, max_bytes)
            .await
            .map(http::Response::into_body)
    }

    /// [`Services::federation_raw`] with the answer's headers (a multipart answer needs its
    /// content type).
    pub async fn federation_response(
        &self,
        server: &ServerName,
        request: http::Request<Vec<u8>>,
        signed: bool,
        max_bytes: usize,
    ) -> Result<http::Response<Vec<u8>>, FederationError> {
        if !self.config.federation.enabled {
            return Err(FederationError::Disabled);
        }
        let destination = self
            .federation
            .resolver
            .destination(server, &self.federation.http)
            .await
            .map_err(FederationError::Unreachable)?;
        let mut request =
            on_base(request, &destination).map_err(|e| FederationError::Internal(e.to_string()))?;
        if signed {
            let authorization = XMatrix::try_from_http_request(
                &request,
                ServerSignaturesInput::new(
                    self.config.server_name.clone(),
                    server.to_owned(),
                    &self.signing_key,
                ),
            )
            .map_err(|e| FederationError::Internal(e.to_string()))?;
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, (&authorization).into());
        }
        let response = self
            .federation
            .http
            .send(&destination, request, self.federation.timeout, max_bytes)
            .await
            .map_err(|refused| {
                self.federation.resolver.forget(server);
                FederationError::Unreachable(refused.0)
            })?;
        if !response.status().is_success() {
            return Err(FederationError::Remote {
                server: server.to_owned(),
                status: response.status(),
                body: String::from_utf8_lossy(response.body())
                    .chars()
                    .take(500)
                    .collect(),
            });
        }
        Ok(response)
    }

    /// Sends a typed Server-Server API request to `server`, signed, and reads its typed answer.
    pub async fn send_federation<T>(
        &self,
        server: &ServerName,
        request: T,
    ) -> Result<T::IncomingResponse, FederationError>
    where
        T: OutgoingRequest<
                Authentication = ServerSignatures,
                PathBuilder = ruma::api::path_builder::SinglePath,
            >,
    {
        let http_request = request
            .try_into_http_request::<Vec<u8>>(
                "https://placeholder.invalid",
                ServerSignaturesInput::new(
                    self.config.server_name.clone(),
                    server.to_owned(),
                    &self.signing_key,
                ),
                (),
            )
            .map_err(|e| FederationError::Internal(e.to_string()))?;
        // The placeholder base is replaced by the destination's, and the request signed again
        // for it (the signature covers only the path, so it is the same).
        let (parts, body) = http_request.into_parts();
        let response = self
            .federation_response(
                server,
                http::Request::from_parts(parts, body),
                true,
                MAX_RESPONSE_BYTES,
            )
            .await?;
        T::IncomingResponse::try_from_http_response(response)
            .map_err(|e| FederationError::BadResponse(format!("{server}: {e}")))
    }

    /// The server that signed an incoming request, after checking its `X-Matrix` signature
    /// with that server's key: 401 for a missing, malformed, misdirected or bad signature.
    pub async fn verify_federation_request(
        &self,
        parts: &Parts,
        body: &Bytes,
    ) -> Result<OwnedServerName, FederationError> {
        let unauthorized = |why: &str| FederationError::Unauthorized(why.to_owned());
        let header = parts
            .headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .find(|v| {
                v.as_bytes()
                    .get(..9)
                    .is_some_and(|s| s.eq_ignore_ascii_case(b"x-matrix "))
            })
            .ok_or_else(|| unauthorized("Missing X-Matrix authorization"))?;
        let xmatrix = XMatrix::try_from(header).map_err(|e| {
            FederationError::Unauthorized(format!("Malformed X-Matrix authorization: {e}"))
        })?;
        if xmatrix
            .destination
            .as_ref()
            .is_some_and(|d| *d != self.config.server_name)
        {
            return Err(unauthorized(
                "The request is signed for another destination",
            ));
        }
        if xmatrix.origin == self.config.server_name {
            return Err(unauthorized("The request claims to come from this server"));
        }
        let keys = self
            .server_keys_for(&xmatrix.origin, &[xmatrix.key.as_str()], self.now_ms())
            .await?;
        let map = PublicKeyMap::from([(xmatrix.origin.to_string(), keys)]);
        let mut request = http::Request::new(body.as_ref());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        xmatrix
            .verify_request(&request, &self.config.server_name, &map)
            .map_err(|e| {
                FederationError::Unauthorized(format!(
                    "The request's signature does not verify: {e}"
                ))
            })?;
        Ok(xmatrix.origin)
    }
}

impl From<FederationError> for crate::http::error::Error {
    fn from(error: FederationError) -> Self {
        use crate::http::error::Error;
        use http::StatusCode;
        use ruma::api::error::ErrorKind;
        match error {
            FederationError::Disabled => Error::forbidden("Federation is disabled on this server"),
            FederationError::Unreachable(why) | FederationError::BadResponse(why) => Error::new(
                StatusCode::BAD_GATEWAY,
                ErrorKind::Unknown,
                format!("The other server could not be asked: {why}"),
            ),
            FederationError::Remote {
                server,
                status,
                body,
            } => {
                #[derive(serde::Deserialize)]
                struct Body {
                    error: Option<String>,
                }
                let said = serde_json::from_str::<Body>(&body)
                    .ok()
                    .and_then(|b| b.error)
                    .unwrap_or_default();
                let message = format!("{server} answered {status}: {said}");
                match status {
                    StatusCode::NOT_FOUND => Error::not_found(message),
                    StatusCode::FORBIDDEN => Error::forbidden(message),
                    StatusCode::BAD_REQUEST => Error::bad_request(message),
                    _ => Error::new(StatusCode::BAD_GATEWAY, ErrorKind::Unknown, message),
                }
            }
            FederationError::Unauthorized(why) => {
                Error::new(StatusCode::UNAUTHORIZED, ErrorKind::Unauthorized, why)
            }
            FederationError::Store(e) => Error::from(e),
            FederationError::Internal(why) => Error::Internal(anyhow::anyhow!(why)),
        }
    }
}

impl Services {
    /// A signed JSON request to `server` (for endpoints whose ruma types add nothing here),
    /// within `timeout` at most.
    pub async fn federation_json(
        &self,
        server: &ServerName,
        method: http::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<serde_json::Value, FederationError> {
        let bytes = match body {
            Some(body) => {
                serde_json::to_vec(body).map_err(|e| FederationError::Internal(e.to_string()))?
            }
            None => Vec::new(),
        };
        let mut request = http::Request::new(bytes);
        *request.method_mut() = method;
        *request.uri_mut() = path
            .parse()
            .map_err(|e: http::uri::InvalidUri| FederationError::Internal(e.to_string()))?;
        let answer = tokio::time::timeout(
            timeout,
            self.federation_raw(server, request, true, MAX_RESPONSE_BYTES),
        )
        .await
        .map_err(|_| FederationError::Unreachable(format!("{server} did not answer in time")))??;
        serde_json::from_slice(&answer)
            .map_err(|e| FederationError::BadResponse(format!("{server}: {e}")))
    }
}
