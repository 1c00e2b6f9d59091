//! The server's logic. Handlers call into [`Services`]; services call the store.

mod account_data;
mod accounts;
pub mod backup;
pub mod directory;
pub mod ephemeral;
pub mod export;
pub mod federation;
pub mod gate;
pub mod housekeeping;
pub mod identity;
pub mod keys;
pub mod media;
pub mod names;
mod nonces;
pub mod oauth;
pub mod periodic;
pub mod presence;
mod profile;
pub mod push;
pub mod push_lanes;
pub mod push_mentions;
mod rate_limit;
mod redis;
pub mod registration;
mod reports;
pub mod rooms;
pub mod search;
pub mod secrets;
mod sessions;
mod sso;
pub mod sync;
pub mod timeline;
mod to_device;
mod uia;
pub mod voip;
mod wallet;

use std::sync::Arc;

use anyhow::Context;
use matrixon_chain::rpc::Chains;
use ruma::signatures::Ed25519KeyPair;

use crate::{bus::Bus, clock::Clock, config::Config, http::metrics::Metrics, store::Store};

pub use accounts::WALLET_LOCALPART_HINT;
pub use nonces::NonceStore;
pub use rate_limit::{Limit, RateLimiter};
pub use sessions::{IssuedSession, Session};
pub use sso::{SSO_IDP_ID, SsoRedirect};
pub use uia::{UiaOperation, UiaOutcome};
pub use wallet::{SIWE_LOGIN_TYPE, SiweParameters, parse_address};

/// Everything a request may need, built once at start and shared by reference.
pub struct Services {
    /// Validated configuration.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// Wall-clock time.
    pub clock: Arc<dyn Clock>,
    /// Login and registration limits.
    pub limiter: RateLimiter,
    /// Prometheus instruments.
    pub metrics: Metrics,
    /// The server's ed25519 key, for signing events and federation requests.
    pub signing_key: Ed25519KeyPair,
    /// Configured EVM chains (contract-account logins and gates read through these).
    pub chains: Chains,
    /// Where single-use nonces are kept.
    pub nonces: NonceStore,
    /// Wake-ups for waiting syncs.
    pub bus: Bus,
    /// Who is typing where.
    pub typing: Arc<ephemeral::Typing>,
    /// Who is online.
    pub presence: Arc<presence::Presence>,
    /// ENS lookups (found or not), reused for `names.cache_ttl_s`.
    pub name_cache: names::NameCache,
    /// How CCIP-Read gateways and did:web documents are fetched (SSRF rules, limits, CAs).
    pub fetch: matrixon_chain::ens::Gateway,
    /// Member events each device was sent under lazy loading.
    pub lazy_members: sync::LazyMembers,
    /// The latest events of every room, for answering woken syncs.
    pub recent: sync::RecentEvents,
    /// Unread counts asked for by many syncs at once, read together.
    pub unread_counts: sync::CountBatches,
    /// Gate verdicts, reused until their TTL or a transfer of the tokens involved.
    pub gate_cache: gate::VerdictCache,
    /// Local joins to rooms that may have roles, applied by the re-check job.
    pub role_joins: gate::RoleJoins,
    /// Payments seen in transfer logs, waiting for their confirmations.
    pub payment_checks: gate::PaymentChecks,
    /// Serialises event building per room within this process.
    pub room_locks: rooms::RoomLocks,
    /// How URL previews fetch pages (SSRF rules, `media.preview_*` limits).
    pub preview_fetch: matrixon_chain::ens::Gateway,
    /// Recent URL previews.
    pub previews: media::PreviewCache,
    /// How push gateways are reached (SSRF rules, `push.gateway_allow`).
    pub push_fetch: matrixon_chain::ens::Gateway,
    /// Push deliveries' concurrency lanes and paused gateways.
    pub push_lanes: Arc<push_lanes::PushLanes>,
    /// Parsed push rules of recent recipients.
    pub rulesets: push::RulesetCache,
    /// Who peeks into which world-readable room here (woken with its members).
    pub peekers: rooms::peek::Peekers,
    /// Other servers: where they are, their keys, the HTTP clients that reach them.
    pub federation: federation::Federation,
}

impl Services {
    /// Wires the services together, loading (or creating on first start) the signing key.
    pub async fn new(config: Config, store: Store, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let candidate = Ed25519KeyPair::generate();
        let candidate_id = format!("ed25519:a_{}", secrets::random_alphanumeric(4));
        let (key_id, pkcs8) = store
            .current_signing_key(&candidate_id, &candidate, clock.now_ms())
            .await
            .context("loading the server signing key")?;
        let version = key_id
            .strip_prefix("ed25519:")
            .unwrap_or(&key_id)
            .to_owned();
        let signing_key =
            Ed25519KeyPair::from_der(&pkcs8, version).context("decoding the server signing key")?;
        let limiter = RateLimiter::new(config.rate_limits.clone());
        let metrics = Metrics::new().context("registering metrics")?;
        let chains = Chains::new(&config.chains).map_err(|e| anyhow::anyhow!("chains: {e}"))?;
        // One connection (it multiplexes) for nonces, gate verdicts and name lookups.
        let redis = match &config.redis.url {
            Some(url) => Some(redis::connect(url).await?),
            None => None,
        };
        let nonces = NonceStore::new(redis.clone()).await?;
        let gate_cache = gate::VerdictCache::new(redis.clone(), config.server_name.as_str());
        let fetch = names::fetch_policy(&config.names)?;
        let preview_fetch = media::preview_policy(&config.media, &fetch);
        let push_fetch = matrixon_chain::ens::Gateway {
            allow: config.push.gateway_allow.clone(),
            timeout: push::GATEWAY_TIMEOUT,
            max_bytes: push::GATEWAY_MAX_BYTES,
            extra_roots: fetch.extra_roots.clone(),
        };
        let name_cache = names::NameCache::new(redis, config.server_name.as_str());
        let federation = federation::Federation::new(&config.federation)?;
        let typing = Arc::new(ephemeral::Typing::default());
        let presence = Arc::new(presence::Presence::default());
        let bus = match &config.redis.url {
            Some(url) => {
                let shared = (typing.clone(), presence.clone());
                Bus::with_redis(url, config.server_name.as_str(), shared).await?
            }
            None => Bus::default(),
        };
        Ok(Self {
            config,
            store,
            clock,
            limiter,
            metrics,
            signing_key,
            chains,
            nonces,
            bus,
            typing,
            presence,
            gate_cache,
            role_joins: gate::RoleJoins::default(),
            payment_checks: gate::PaymentChecks::default(),
            lazy_members: sync::LazyMembers::default(),
            recent: sync::RecentEvents::default(),
            unread_counts: sync::CountBatches::default(),
            name_cache,
            fetch,
            room_locks: rooms::RoomLocks::default(),
            preview_fetch,
            previews: media::PreviewCache::default(),
            push_fetch,
            push_lanes: Arc::default(),
            rulesets: push::RulesetCache::default(),
            peekers: rooms::peek::Peekers::default(),
            federation,
        })
    }

    /// Now, from the injected clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Counts a request against a limit; 429 `M_LIMIT_EXCEEDED` when its bucket is empty.
    pub fn rate_limit(&self, limit: Limit, key: &str) -> crate::http::error::Result<()> {
        self.limiter
            .check(limit, key, self.now_ms())
            .map_err(crate::http::error::Error::limit_exceeded)
    }
}
