//! One typed configuration, read from TOML and `MATRIXON_*` environment overrides.

mod env;

use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use matrixon_chain::rpc::{ChainConfig, Chains};

use ruma::OwnedServerName;
use serde::Deserialize;

/// The commented configuration printed by `matrixon generate-config`; every key appears in it.
pub const TEMPLATE: &str = include_str!("template.toml");

/// Everything the server reads at start; nothing else is configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The homeserver's name, the domain part of every local user ID.
    pub server_name: OwnedServerName,
    /// Client API listen addresses.
    pub listen: Vec<SocketAddr>,
    /// The URL clients use to reach the server.
    pub public_baseurl: Option<String>,
    /// What `/.well-known/matrix/server` announces.
    pub federation_address: Option<String>,
    /// Largest accepted request body in bytes.
    pub max_request_bytes: usize,
    /// The version of rooms created without one.
    pub default_room_version: String,
    /// Logging.
    pub log: LogConfig,
    /// Storage backend.
    pub database: DatabaseConfig,
    /// Who may create accounts.
    pub registration: RegistrationConfig,
    /// Token lifetimes.
    pub sessions: SessionsConfig,
    /// Prometheus exporter.
    pub metrics: MetricsConfig,
    /// Abuse limits.
    pub rate_limits: RateLimitsConfig,
    /// Sign-In with Ethereum.
    pub wallet: WalletConfig,
    /// The wallet single sign-on page for ordinary Matrix clients.
    pub sso: SsoConfig,
    /// Shared Redis for state every instance must see.
    pub redis: RedisConfig,
    /// Token-gated rooms: batching, caching and re-check cadence.
    pub gate: GateConfig,
    /// ENS and DIDs: where ENS lives, CCIP-Read gateways, caching, profile refreshes.
    pub names: NamesConfig,
    /// The media repository.
    pub media: MediaConfig,
    /// Push gateways.
    pub push: PushConfig,
    /// TURN credentials for calls.
    pub voip: VoipConfig,
    /// Talking to other Matrix servers.
    pub federation: FederationConfig,
    /// EVM chains by CAIP-2 id (`eip155:1`), with their JSON-RPC providers.
    #[serde(default)]
    pub chains: BTreeMap<String, ChainConfig>,
}

/// Sign-In with Ethereum settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalletConfig {
    /// Who may create an account by signing in with a new wallet.
    pub registration: WalletRegistration,
    /// Addresses allowed under `allowlist`.
    pub allowlist: Vec<String>,
    /// CAIP-2 chains messages may name.
    pub chains: Vec<String>,
    /// Nonce lifetime in seconds.
    pub nonce_ttl_s: u64,
    /// Clock skew tolerance in seconds.
    pub clock_skew_s: u64,
    /// Domain messages must name; defaults to the host of `public_baseurl`.
    pub domain: Option<String>,
    /// URI messages must point into; defaults to `public_baseurl`.
    pub uri: Option<String>,
    /// Statement of sign-in messages.
    pub statement: Option<String>,
}

/// Redis settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://…` or `rediss://…`; Redis is not used when unset.
    pub url: Option<String>,
}

/// Gating settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// Most calls in one Multicall3 `eth_call`.
    pub batch_size: usize,
    /// Seconds a verdict is reused (capped below each room's re-check interval).
    pub cache_ttl_s: u64,
    /// Milliseconds between looks for gated rooms due a re-check.
    pub sweep_interval_ms: u64,
    /// Milliseconds between polls for token transfers (`eth_getLogs`).
    pub log_poll_interval_ms: u64,
    /// Blocks a submitted payment needs, its own included, before it counts.
    pub payment_confirmations: u64,
    /// Where the gate page opens a room it joined (`{room}`: alias or id).
    pub client_url: String,
}

/// Names settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamesConfig {
    /// The CAIP-2 chain ENS is read from (it needs a `[chains]` entry); names are off without one.
    pub ens_chain: String,
    /// `host` or `host:port` CCIP-Read gateways that may be private or plain http.
    pub gateway_allow: Vec<String>,
    /// Per-request time limit for gateways, in milliseconds.
    pub gateway_timeout_ms: u64,
    /// Largest gateway answer read, in bytes.
    pub gateway_max_bytes: usize,
    /// Seconds a name or primary-name lookup (found or not) is reused.
    pub cache_ttl_s: u64,
    /// Seconds between refreshes of wallet users' ENS display names (also refreshed at login).
    pub refresh_interval_s: u64,
    /// The IPFS HTTP gateway `ipfs://` avatars are fetched through.
    pub ipfs_gateway: String,
    /// A PEM file of certificate authorities trusted for gateways and did:web besides the
    /// system's.
    pub extra_ca_file: Option<String>,
}

/// Media repository settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Directory of the content-addressed files.
    pub directory: String,
    /// Largest upload, in bytes.
    pub max_upload_bytes: usize,
    /// Serve media on the legacy unauthenticated endpoints (frozen by default).
    pub legacy_unauthenticated: bool,
    /// Whether URL previews are made at all.
    pub url_preview: bool,
    /// `host` or `host:port` entries that previews may fetch although private.
    pub preview_allow: Vec<String>,
    /// Per-preview time limit, in milliseconds.
    pub preview_timeout_ms: u64,
    /// Largest page read for a preview, in bytes.
    pub preview_max_bytes: usize,
}

/// Push settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// `host` or `host:port` push gateways that may be private or plain http.
    pub gateway_allow: Vec<String>,
}

/// Federation settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Whether other servers are talked to (and answered) at all.
    pub enabled: bool,
    /// A TLS listener (port 8448 by convention) serving federation and the client API.
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain for that listener (re-read on SIGHUP).
    pub tls_certificate: Option<String>,
    /// PEM private key for that listener (re-read on SIGHUP).
    pub tls_private_key: Option<String>,
    /// A PEM file of certificate authorities trusted for other servers besides the system's.
    pub extra_ca_file: Option<String>,
    /// CIDR ranges other servers may be on although private, loopback or link-local.
    pub ip_range_allow: Vec<String>,
    /// Servers asked for other servers' keys when those cannot be fetched directly.
    pub trusted_key_servers: Vec<OwnedServerName>,
    /// Per-request time limit for requests to other servers, in milliseconds.
    pub request_timeout_ms: u64,
    /// Whether other servers may read the public room directory (Synapse's
    /// `allow_public_rooms_over_federation`, off by default there too).
    pub allow_public_rooms: bool,
}

/// VoIP settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoipConfig {
    /// `turn:`/`turns:` URIs handed to clients.
    pub turn_uris: Vec<String>,
    /// The secret shared with the TURN server (coturn's `static-auth-secret`).
    pub turn_shared_secret: Option<String>,
    /// Seconds credentials stay valid.
    pub turn_ttl_s: u64,
}

/// Whether a URL-ish string carries `user@` before its host.
fn url_has_userinfo(url: &str) -> bool {
    url.split_once("://")
        .map(|(_, rest)| {
            rest.split(['/', '?', '#'])
                .next()
                .unwrap_or_default()
                .contains('@')
        })
        .unwrap_or(false)
}

/// Wallet single sign-on settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoConfig {
    /// URL prefixes that receive a login token without the user confirming the destination.
    pub client_whitelist: Vec<String>,
}

/// Wallet account creation policy.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WalletRegistration {
    /// Any wallet gets an account on first sign-in.
    Open,
    /// Only allow-listed wallets get one.
    Allowlist,
    /// Only wallets already linked to an account sign in.
    Closed,
}

/// Logging settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter directives.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// Human or machine log lines.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Storage settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite:PATH` or `postgres://…`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
}

/// Registration policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Open registration through the client API.
    pub open: bool,
    /// Registration needs a registration token.
    pub tokens_required: bool,
    /// Secret for Synapse-compatible shared-secret registration.
    pub shared_secret: Option<String>,
    /// Guest accounts may be registered (and may read and join rooms that allow guests).
    pub guest_access: bool,
}

/// Lifetimes of the secrets the server hands out.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// Seconds a refreshable access token lives.
    pub refreshable_access_token_lifetime_s: u64,
    /// Seconds a login token lives.
    pub login_token_lifetime_s: u64,
    /// Seconds a UIA session lives.
    pub uia_session_lifetime_s: u64,
}

/// Metrics exporter settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `/metrics` is served; off when unset.
    pub listen: Option<SocketAddr>,
}

/// Rate limit settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Master switch.
    pub enabled: bool,
    /// Login attempts per IP.
    pub login_per_ip: Bucket,
    /// Login attempts per account.
    pub login_per_account: Bucket,
    /// Registration attempts per IP.
    pub register_per_ip: Bucket,
    /// Name, DID and gate lookups per user: each may cost provider calls.
    pub lookups_per_user: Bucket,
    /// Chain reads per user that gate dry runs may spend.
    pub chain_reads_per_user: Bucket,
    /// Reports of events, rooms and users per user.
    pub reports_per_user: Bucket,
}

/// One token bucket's shape.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    /// Refill rate.
    pub per_second: f64,
    /// Capacity.
    pub burst: u32,
}

/// Why the configuration could not be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// TOML syntax or a key of the wrong type or name.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads the file (if any), applies `MATRIXON_*` overrides from `env`, then validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_toml_with_env(&text, env)
    }

    /// Parses TOML text layered over the defaults, applies environment overrides, validates.
    pub fn from_toml_with_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        env::apply_overrides(&mut table, env)?;
        let mut merged = defaults();
        merge(&mut merged, table);
        let config: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("`{key}`: {why}")));
        if self.listen.is_empty() {
            return bad("listen", "needs at least one address");
        }
        if !(self.database.url.starts_with("sqlite:")
            || self.database.url.starts_with("postgres://")
            || self.database.url.starts_with("postgresql://"))
        {
            return bad(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://",
            );
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections", "must be at least 1");
        }
        if let Some(url) = &self.public_baseurl
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return bad("public_baseurl", "must be an http:// or https:// URL");
        }
        if self.max_request_bytes < 1024 {
            return bad("max_request_bytes", "must be at least 1024");
        }
        if !crate::service::rooms::SUPPORTED_ROOM_VERSIONS
            .contains(&self.default_room_version.as_str())
        {
            return bad(
                "default_room_version",
                "must be a room version from 1 to 12",
            );
        }
        if matches!(&self.registration.shared_secret, Some(s) if s.is_empty()) {
            return bad(
                "registration.shared_secret",
                "must not be empty (leave it unset instead)",
            );
        }
        for (i, address) in self.wallet.allowlist.iter().enumerate() {
            if address.len() != 42
                || !address.starts_with("0x")
                || !address[2..].bytes().all(|b| b.is_ascii_hexdigit())
            {
                return bad(
                    &format!("wallet.allowlist[{i}]"),
                    "must be a 0x-prefixed 20-byte hex address",
                );
            }
        }
        for chain in &self.wallet.chains {
            matrixon_chain::rpc::parse_caip2(chain)
                .map_err(|e| ConfigError::Invalid(format!("`wallet.chains`: {e}")))?;
        }
        if self.media.max_upload_bytes == 0 {
            return bad("media.max_upload_bytes", "must be at least 1");
        }
        if self.media.preview_timeout_ms == 0 || self.media.preview_max_bytes == 0 {
            return bad(
                "media.preview_timeout_ms",
                "media.preview_timeout_ms and media.preview_max_bytes must be at least 1",
            );
        }
        for (i, uri) in self.voip.turn_uris.iter().enumerate() {
            if !(uri.starts_with("turn:") || uri.starts_with("turns:") || uri.starts_with("stun:"))
            {
                return bad(
                    &format!("voip.turn_uris[{i}]"),
                    "must be a turn:, turns: or stun: URI",
                );
            }
        }
        let federation = &self.federation;
        if federation.listen.is_some()
            && (federation.tls_certificate.is_none() || federation.tls_private_key.is_none())
        {
            return bad(
                "federation.listen",
                "needs federation.tls_certificate and federation.tls_private_key",
            );
        }
        for (i, range) in federation.ip_range_allow.iter().enumerate() {
            if let Err(why) = crate::service::federation::IpRange::parse(range) {
                return bad(&format!("federation.ip_range_allow[{i}]"), &why);
            }
        }
        if federation.request_timeout_ms == 0 {
            return bad("federation.request_timeout_ms", "must be at least 1");
        }
        if self.voip.turn_ttl_s == 0 {
            return bad("voip.turn_ttl_s", "must be at least 1 second");
        }
        if self.wallet.nonce_ttl_s == 0 || self.wallet.nonce_ttl_s > 86_400 {
            return bad("wallet.nonce_ttl_s", "must be between 1 second and one day");
        }
        if let Some(uri) = &self.wallet.uri
            && !(uri.starts_with("http://") || uri.starts_with("https://"))
        {
            return bad("wallet.uri", "must be an http:// or https:// URL");
        }
        for (i, prefix) in self.sso.client_whitelist.iter().enumerate() {
            if !prefix.ends_with('/') || url_has_userinfo(prefix) {
                return bad(
                    &format!("sso.client_whitelist[{i}]"),
                    "must be a URL prefix ending with \"/\" (https://app.example.org/), without user name",
                );
            }
        }
        if self.gate.batch_size == 0 || self.gate.batch_size > 5_000 {
            return bad("gate.batch_size", "must be between 1 and 5000");
        }
        if self.gate.sweep_interval_ms < 10 || self.gate.log_poll_interval_ms < 10 {
            return bad(
                "gate.sweep_interval_ms",
                "gate.sweep_interval_ms and gate.log_poll_interval_ms must be at least 10",
            );
        }
        if self.gate.payment_confirmations == 0 {
            return bad("gate.payment_confirmations", "must be at least 1");
        }
        matrixon_chain::rpc::parse_caip2(&self.names.ens_chain)
            .map_err(|e| ConfigError::Invalid(format!("`names.ens_chain`: {e}")))?;
        if self.names.gateway_timeout_ms == 0 || self.names.gateway_max_bytes == 0 {
            return bad(
                "names.gateway_timeout_ms",
                "names.gateway_timeout_ms and names.gateway_max_bytes must be at least 1",
            );
        }
        if self.names.refresh_interval_s < 60 {
            return bad("names.refresh_interval_s", "must be at least 60");
        }
        // Building the registry checks every entry (ids, URLs, timeouts) and names the bad one.
        Chains::new(&self.chains).map_err(ConfigError::Invalid)?;
        for (key, bucket) in [
            ("rate_limits.login_per_ip", self.rate_limits.login_per_ip),
            (
                "rate_limits.login_per_account",
                self.rate_limits.login_per_account,
            ),
            (
                "rate_limits.register_per_ip",
                self.rate_limits.register_per_ip,
            ),
            (
                "rate_limits.lookups_per_user",
                self.rate_limits.lookups_per_user,
            ),
            (
                "rate_limits.chain_reads_per_user",
                self.rate_limits.chain_reads_per_user,
            ),
            (
                "rate_limits.reports_per_user",
                self.rate_limits.reports_per_user,
            ),
        ] {
            if !(bucket.per_second.is_finite() && bucket.per_second > 0.0) || bucket.burst == 0 {
                return bad(key, "per_second must be > 0 and burst >= 1");
            }
        }
        for (key, secs) in [
            (
                "sessions.refreshable_access_token_lifetime_s",
                self.sessions.refreshable_access_token_lifetime_s,
            ),
            (
                "sessions.login_token_lifetime_s",
                self.sessions.login_token_lifetime_s,
            ),
            (
                "sessions.uia_session_lifetime_s",
                self.sessions.uia_session_lifetime_s,
            ),
        ] {
            if secs == 0 || secs > 365 * 24 * 3600 {
                return bad(key, "must be between 1 second and one year");
            }
        }
        Ok(())
    }

    /// The base URL clients are told to use, always ending in `/`.
    pub fn public_baseurl(&self) -> String {
        let url = match &self.public_baseurl {
            Some(url) => url.clone(),
            None => {
                let port = self.listen.first().map_or(8008, SocketAddr::port);
                format!("http://{}:{port}/", self.server_name)
            }
        };
        if url.ends_with('/') {
            url
        } else {
            format!("{url}/")
        }
    }

    /// The domain SIWE messages must name: `wallet.domain`, else the authority of `public_baseurl`.
    pub fn wallet_domain(&self) -> String {
        self.wallet.domain.clone().unwrap_or_else(|| {
            let base = self.public_baseurl();
            let rest = base.split_once("://").map_or(base.as_str(), |(_, r)| r);
            rest.split('/').next().unwrap_or_default().to_owned()
        })
    }

    /// The URI SIWE messages must point into: `wallet.uri`, else `public_baseurl`.
    pub fn wallet_uri(&self) -> String {
        self.wallet
            .uri
            .clone()
            .unwrap_or_else(|| self.public_baseurl())
    }

    /// The `host:port` that `/.well-known/matrix/server` announces.
    pub fn federation_address(&self) -> String {
        if let Some(address) = &self.federation_address {
            return address.clone();
        }
        let base = self.public_baseurl();
        let (https, rest) = match base.strip_prefix("https://") {
            Some(rest) => (true, rest),
            None => (false, base.trim_start_matches("http://")),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
            && !authority.ends_with(']');
        match (has_port, https) {
            (true, _) => authority.to_owned(),
            (false, true) => format!("{authority}:443"),
            (false, false) => format!("{authority}:80"),
        }
    }
}

/// The template with every commented-out key left out: the built-in defaults.
fn defaults() -> toml::Table {
    // The template is part of the binary and covered by a unit test, so this cannot fail at
    // run time; an empty table would still be caught by validation of required keys.
    toml::from_str(TEMPLATE).unwrap_or_default()
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_t)), toml::Value::Table(over_t)) => merge(base_t, over_t),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn template_is_the_default_configuration() {
        let config = Config::from_toml_with_env("", no_env()).expect("defaults are valid");
        assert_eq!(config.server_name.as_str(), "localhost");
        assert_eq!(config.listen, vec!["127.0.0.1:8008".parse().expect("addr")]);
        assert_eq!(config.database.url, "sqlite:./data/matrixon.db");
        assert!(!config.registration.open);
        assert_eq!(config.public_baseurl(), "http://localhost:8008/");
        assert_eq!(config.federation_address(), "localhost:8008");
    }

    #[test]
    fn template_with_every_key_uncommented_is_valid() {
        let uncommented: String = TEMPLATE
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.starts_with('[') => rest,
                Some(rest)
                    if rest.contains(" = ")
                        && rest.split(' ').next().is_some_and(|k| {
                            k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        }) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config = Config::from_toml_with_env(&uncommented, no_env()).expect("valid");
        assert_eq!(
            config.registration.shared_secret.as_deref(),
            Some("a long random string")
        );
        assert_eq!(
            config.metrics.listen,
            Some("127.0.0.1:9108".parse().expect("addr"))
        );
        assert_eq!(config.federation_address(), "matrix.example.org:443");
        assert_eq!(config.chains["eip155:1"].rpc.len(), 2);
        assert_eq!(config.chains["eip155:1"].max_rps, Some(20));
    }

    #[test]
    fn the_default_room_version_must_be_one_the_server_has() {
        for bad in ["13", "", "org.example.custom"] {
            let toml = format!("default_room_version = \"{bad}\"\n");
            let err = Config::from_toml_with_env(&toml, no_env()).expect_err("refused");
            assert!(err.to_string().contains("default_room_version"), "{err}");
        }
        let config =
            Config::from_toml_with_env("default_room_version = \"10\"\n", no_env()).expect("valid");
        assert_eq!(config.default_room_version, "10");
    }

    #[test]
    fn whitelist_entries_must_be_safe_prefixes() {
        for entry in ["https://app.example", "https://app.example@evil.example/"] {
            let toml = format!("[sso]\nclient_whitelist = [\"{entry}\"]\n");
            let err = Config::from_toml_with_env(&toml, no_env()).expect_err("refused");
            assert!(err.to_string().contains("sso.client_whitelist[0]"), "{err}");
        }
        let ok = "[sso]\nclient_whitelist = [\"https://app.element.io/\"]\n";
        assert!(Config::from_toml_with_env(ok, no_env()).is_ok());
    }

    #[test]
    fn bad_chain_entries_are_named() {
        let err =
            Config::from_toml_with_env("[chains.\"eip155:x\"]\nrpc = [\"http://a\"]\n", no_env())
                .expect_err("bad id");
        assert!(err.to_string().contains("eip155:x"), "{err}");
        let err = Config::from_toml_with_env("[chains.\"eip155:1\"]\nrpc = []\n", no_env())
            .expect_err("no rpc");
        assert!(err.to_string().contains("eip155:1"), "{err}");
        let err = Config::from_toml_with_env(
            "[chains.\"eip155:1\"]\nrpc = [\"http://a\"]\nrcp = 1\n",
            no_env(),
        )
        .expect_err("typo");
        assert!(err.to_string().contains("rcp"), "{err}");
    }

    #[test]
    fn unknown_and_mistyped_keys_are_named() {
        let err = Config::from_toml_with_env("[registration]\nopen = true\nopn = 1\n", no_env())
            .expect_err("unknown key");
        assert!(err.to_string().contains("opn"), "{err}");
        let err = Config::from_toml_with_env("[database]\nmax_connections = \"many\"\n", no_env())
            .expect_err("wrong type");
        assert!(err.to_string().contains("max_connections"), "{err}");
        let err = Config::from_toml_with_env("[database]\nurl = \"mysql://x\"\n", no_env())
            .expect_err("bad url");
        assert!(err.to_string().contains("database.url"), "{err}");
        let err = Config::from_toml_with_env("server_name = \"not a name!\"\n", no_env())
            .expect_err("bad name");
        assert!(err.to_string().contains("server_name"), "{err}");
    }

    #[test]
    fn environment_overrides_win_over_the_file() {
        let env = vec![
            ("MATRIXON_SERVER_NAME".to_owned(), "example.org".to_owned()),
            (
                "MATRIXON_LISTEN".to_owned(),
                "127.0.0.1:1,[::1]:2".to_owned(),
            ),
            (
                "MATRIXON_DATABASE_URL".to_owned(),
                "postgres://x@localhost/db".to_owned(),
            ),
            (
                "MATRIXON_REGISTRATION_SHARED_SECRET".to_owned(),
                "s3cret".to_owned(),
            ),
            ("MATRIXON_REGISTRATION_OPEN".to_owned(), "true".to_owned()),
            (
                "MATRIXON_RATE_LIMITS_LOGIN_PER_IP_BURST".to_owned(),
                "3".to_owned(),
            ),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let config =
            Config::from_toml_with_env("server_name = \"file.org\"\n", env).expect("valid");
        assert_eq!(config.server_name.as_str(), "example.org");
        assert_eq!(config.listen.len(), 2);
        assert_eq!(config.database.url, "postgres://x@localhost/db");
        assert_eq!(config.registration.shared_secret.as_deref(), Some("s3cret"));
        assert!(config.registration.open);
        assert_eq!(config.rate_limits.login_per_ip.burst, 3);
    }

    #[test]
    fn unknown_environment_keys_are_refused() {
        let env = vec![("MATRIXON_REGISTRATON_OPEN".to_owned(), "true".to_owned())];
        let err = Config::from_toml_with_env("", env).expect_err("typo");
        assert!(
            err.to_string().contains("MATRIXON_REGISTRATON_OPEN"),
            "{err}"
        );
    }
}
