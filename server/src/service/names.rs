//! Names: ENS names, addresses, CAIP-10 accounts and DIDs to Matrix users; ENS primary
//! names as display names; invites by name; each user's did:web document.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use http::StatusCode;
use matrixon_chain::{
    did,
    ens::{Avatar, EnsError, Gateway, Resolver},
    rpc::{Chain, ChainError},
};
use ruma::{OwnedUserId, RoomId, UserId, api::error::ErrorKind};
use serde_json::{Value, json};
use sha2::Digest;

use super::{Services, rooms::MembershipChange};
use crate::{
    config::WalletRegistration,
    http::error::{Error, Result},
};

/// Lookups by key (`fwd:<name>`, `rev:<address>`) with their expiry, misses too: in this
/// process, or in Redis (`matrixon:<server>:names:<key>`) when configured.
pub enum NameCache {
    /// This process only.
    Memory(Mutex<HashMap<String, (i64, Option<String>)>>),
    /// Shared by every instance.
    Redis {
        /// The connection.
        connection: redis::aio::ConnectionManager,
        /// Key prefix.
        prefix: String,
    },
}

impl NameCache {
    /// In Redis when a connection is given, else in memory.
    pub fn new(redis: Option<redis::aio::ConnectionManager>, server_name: &str) -> Self {
        match redis {
            Some(connection) => Self::Redis {
                connection,
                prefix: format!("matrixon:{server_name}:names:"),
            },
            None => Self::Memory(Mutex::default()),
        }
    }

    /// A fresh answer (`Some(None)`: a fresh miss). A Redis failure reads as not cached.
    async fn get(&self, key: &str, now_ms: i64) -> Option<Option<String>> {
        let (expires, answer) = match self {
            Self::Memory(map) => map.lock().ok()?.get(key).cloned()?,
            Self::Redis { connection, prefix } => {
                let mut connection = connection.clone();
                let text: Option<String> = redis::cmd("GET")
                    .arg(format!("{prefix}{key}"))
                    .query_async(&mut connection)
                    .await
                    .inspect_err(|e| tracing::warn!(%e, "reading a name lookup from Redis"))
                    .ok()?;
                serde_json::from_str(&text?).ok()?
            }
        };
        (expires > now_ms).then_some(answer)
    }

    async fn put(&self, key: String, answer: Option<String>, now_ms: i64, ttl_ms: i64) {
        let expires = now_ms.saturating_add(ttl_ms);
        match self {
            Self::Memory(map) => {
                if let Ok(mut map) = map.lock() {
                    if map.len() >= 100_000 {
                        map.retain(|_, (e, _)| *e > now_ms);
                    }
                    map.insert(key, (expires, answer));
                }
            }
            Self::Redis { connection, prefix } => {
                let Ok(text) = serde_json::to_string(&(expires, answer)) else {
                    return;
                };
                let mut connection = connection.clone();
                let stored: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(format!("{prefix}{key}"))
                    .arg(text)
                    .arg("PX")
                    .arg(ttl_ms.max(1))
                    .query_async(&mut connection)
                    .await;
                if let Err(e) = stored {
                    tracing::warn!(%e, "storing a name lookup in Redis");
                }
            }
        }
    }
}

/// Refreshes due ENS display names, a batch a minute, until the server stops (its own task:
/// slow lookups never hold up gate re-checks).
pub async fn run_background(
    services: std::sync::Arc<Services>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    // The first batch at start: names due while the server was down.
    super::periodic::every(Duration::ZERO, Duration::from_secs(60), stopped, || async {
        if let Err(e) = services.refresh_due_ens_profiles().await {
            tracing::warn!(error = %e, "refreshing ENS display names failed");
        }
    })
    .await
}

/// The fetch policy for gateways and did:web, from the configuration.
pub fn fetch_policy(config: &crate::config::NamesConfig) -> anyhow::Result<Gateway> {
    let extra_roots = match &config.extra_ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("names.extra_ca_file {path}: {e}"))?;
            matrixon_chain::ens::certificates_from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("names.extra_ca_file {path}: {e}"))?
        }
        None => Vec::new(),
    };
    Ok(Gateway {
        allow: config.gateway_allow.clone(),
        timeout: Duration::from_millis(config.gateway_timeout_ms),
        max_bytes: config.gateway_max_bytes,
        extra_roots,
    })
}

/// Largest ENS avatar imported, in bytes.
const MAX_AVATAR_BYTES: usize = 5 * 1024 * 1024;

/// What an identifier stands for.
#[derive(Debug)]
struct Found {
    /// Lower-case 0x address.
    address: String,
    /// The ENS name it went through.
    name: Option<String>,
    /// The DID it went through.
    did: Option<String>,
}

/// 503 when a DID's chain cannot be asked, 502 when its document cannot be fetched.
fn did_error(e: did::DidError) -> Error {
    match e {
        did::DidError::Chain(e) => Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unknown,
            format!("The DID's chain cannot be asked: {e}"),
        ),
        did::DidError::Fetch(why) => Error::new(
            StatusCode::BAD_GATEWAY,
            ErrorKind::Unknown,
            format!("The DID document could not be fetched: {why}"),
        ),
    }
}

fn ens_error(e: EnsError) -> Error {
    match e {
        EnsError::InvalidName(why) => Error::invalid_param(why),
        EnsError::Chain(ChainError::NotConfigured(chain)) => Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unknown,
            format!("Names are not resolved here: {chain} (names.ens_chain) has no provider"),
        ),
        EnsError::Chain(e) => chain_unavailable(&e),
        EnsError::Gateway(why) => Error::new(
            StatusCode::BAD_GATEWAY,
            ErrorKind::Unknown,
            format!("The name's offchain gateway could not be used: {why}"),
        ),
    }
}

/// 503 for a chain that could not be asked; the cause (provider URLs, which often carry API
/// keys) goes to the log only.
fn chain_unavailable(e: &ChainError) -> Error {
    tracing::warn!(error = %e, "a name lookup could not ask its chain");
    Error::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Unknown,
        "The chain this name lives on cannot be asked right now; try again later",
    )
}

/// Longest a whole lookup (chain calls and CCIP-Read or did:web requests) may take.
const LOOKUP_DEADLINE: Duration = Duration::from_secs(20);

/// Runs a lookup under [`LOOKUP_DEADLINE`].
async fn within_deadline<T>(lookup: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(LOOKUP_DEADLINE, lookup)
        .await
        .unwrap_or_else(|_| {
            Err(Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Unknown,
                "The name could not be resolved in time; try again later",
            ))
        })
}

impl Services {
    /// The chain ENS is read from.
    fn ens(&self) -> std::result::Result<&Chain, EnsError> {
        let id = matrixon_chain::rpc::parse_caip2(&self.config.names.ens_chain)
            .map_err(|e| EnsError::Chain(ChainError::NotConfigured(e)))?;
        Ok(self.chains.get(id)?)
    }

    fn name_ttl_ms(&self) -> i64 {
        i64::try_from(self.config.names.cache_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// The address an ENS name resolves to (normalised first; cached, misses too).
    pub async fn ens_address(&self, name: &str) -> Result<Option<String>> {
        let name = matrixon_chain::ens::normalize(name).map_err(ens_error)?;
        let key = format!("fwd:{name}");
        if let Some(answer) = self.name_cache.get(&key, self.now_ms()).await {
            return Ok(answer);
        }
        let resolver = Resolver {
            chain: self.ens().map_err(ens_error)?,
            gateway: &self.fetch,
        };
        let answer = resolver
            .address(&name, 1)
            .await
            .map_err(ens_error)?
            .map(|a| format!("{a:#x}"));
        self.name_cache
            .put(key, answer.clone(), self.now_ms(), self.name_ttl_ms())
            .await;
        Ok(answer)
    }

    /// The verified primary ENS name of an address (cached, misses too).
    pub async fn ens_primary_name(&self, address: &str) -> Result<Option<String>> {
        let parsed: matrixon_chain::siwe::Address = super::parse_address(address)?
            .parse()
            .map_err(|_| Error::invalid_param("not an address"))?;
        let key = format!("rev:{parsed:#x}");
        if let Some(answer) = self.name_cache.get(&key, self.now_ms()).await {
            return Ok(answer);
        }
        let resolver = Resolver {
            chain: self.ens().map_err(ens_error)?,
            gateway: &self.fetch,
        };
        let answer = resolver.primary_name(parsed).await.map_err(ens_error)?;
        self.name_cache
            .put(key, answer.clone(), self.now_ms(), self.name_ttl_ms())
            .await;
        Ok(answer)
    }

    /// An ENS name, 0x address, CAIP-10 account or DID to the address it stands for.
    async fn find(&self, identifier: &str) -> Result<Found> {
        if identifier.starts_with("did:") {
            let parsed = did::parse(identifier).map_err(Error::invalid_param)?;
            let controller = parsed
                .controller(&self.chains, &self.fetch)
                .await
                .map_err(did_error)?;
            let address = controller.ok_or_else(|| {
                Error::not_found(format!("{identifier} controls no Ethereum account"))
            })?;
            return Ok(Found {
                address: format!("{address:#x}"),
                name: None,
                did: Some(identifier.to_owned()),
            });
        }
        if identifier.starts_with("0x") && !identifier.contains('.') {
            return Ok(Found {
                address: super::parse_address(identifier)?,
                name: None,
                did: None,
            });
        }
        if let Some((chain, address)) = identifier.rsplit_once(':')
            && chain.starts_with("eip155:")
        {
            matrixon_chain::rpc::parse_caip2(chain).map_err(|e| {
                Error::invalid_param(format!("{identifier} is not a CAIP-10 account: {e}"))
            })?;
            return Ok(Found {
                address: super::parse_address(address)?,
                name: None,
                did: None,
            });
        }
        if !identifier.contains('.') {
            return Err(Error::invalid_param(format!(
                "{identifier} is neither an ENS name (name.eth), a 0x address, a CAIP-10 \
                 account nor a DID"
            )));
        }
        let name = matrixon_chain::ens::normalize(identifier).map_err(ens_error)?;
        let address = self
            .ens_address(&name)
            .await?
            .ok_or_else(|| Error::not_found(format!("{name} does not resolve to an address")))?;
        Ok(Found {
            address,
            name: Some(name),
            did: None,
        })
    }

    /// The Matrix user behind an identifier, with the address (and name or DID) it went
    /// through; 404 `M_NOT_FOUND` when nobody here uses that wallet.
    pub async fn resolve_identifier(&self, identifier: &str) -> Result<Value> {
        let found = within_deadline(self.find(identifier)).await?;
        let user_id = self
            .store
            .wallet_owner(&found.address)
            .await?
            .ok_or_else(|| Error::not_found(format!("Nobody here uses {}", found.address)))?;
        let mut body = json!({"user_id": user_id, "address": found.address});
        if let Some(name) = found.name {
            body["name"] = name.into();
        }
        if let Some(did) = found.did {
            body["did"] = did.into();
        }
        Ok(body)
    }

    /// Invites whoever `identifier` names. A wallet nobody uses yet gets its account
    /// reserved (when wallet registration is open): the invite waits for its first sign-in.
    pub async fn invite_identifier(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        identifier: &str,
        reason: Option<&str>,
    ) -> Result<OwnedUserId> {
        self.ensure_joined(room_id, sender).await?;
        let (level, levels) = self.power_level(room_id, sender).await?;
        let needed = super::rooms::level(levels.get("invite")).unwrap_or(0);
        if level < needed {
            return Err(Error::forbidden(format!(
                "Inviting to {room_id} needs power level {needed}"
            )));
        }
        let found = within_deadline(self.find(identifier)).await?;
        let user_id = match self.store.wallet_owner(&found.address).await? {
            Some(user_id) => user_id,
            None if self.config.wallet.registration == WalletRegistration::Open => {
                // Reserving an account is a registration: it counts against the inviter's
                // registration budget, so invites cannot mint accounts without limit.
                self.rate_limit(super::Limit::RegisterPerIp, sender.as_str())?;
                let reserved = self.reserve_wallet_account(&found.address).await?;
                self.store
                    .mark_reserved(reserved.as_str(), self.now_ms())
                    .await?;
                reserved
            }
            None => {
                return Err(Error::forbidden(format!(
                    "Nobody here uses {} and wallet registration is not open, so it cannot be \
                     invited",
                    found.address
                )));
            }
        };
        self.change_membership(room_id, sender, &user_id, MembershipChange::Invite, reason)
            .await?;
        Ok(user_id)
    }

    /// Sets a wallet user's display name from their verified primary ENS name, unless they
    /// chose one themselves (a display name that differs from what ENS last gave them).
    /// Lookup failures leave the profile as it is.
    pub async fn refresh_ens_profile(&self, user_id: &UserId) -> Result<()> {
        let wallets = self.store.wallets(user_id).await?;
        let Some((address, _)) = wallets.iter().min_by_key(|(_, linked)| *linked) else {
            return Ok(());
        };
        let primary = match within_deadline(self.ens_primary_name(address)).await {
            Ok(primary) => primary,
            Err(e) => {
                // Try again at the next interval, not at once: a failing user must not hold
                // up everyone after them.
                tracing::debug!(%user_id, error = %e, "no ENS profile refresh");
                let last = self.store.ens_profile(user_id.as_str()).await?.flatten();
                self.store
                    .set_ens_profile(user_id.as_str(), last.as_deref(), self.now_ms())
                    .await?;
                return Ok(());
            }
        };
        let (current, _) = self.store.profile(user_id.as_str()).await?;
        let last = self.store.ens_profile(user_id.as_str()).await?.flatten();
        let chosen_by_user = current.is_some() && current != last;
        if !chosen_by_user && current != primary {
            self.set_displayname(user_id, primary.as_deref()).await?;
        }
        let recorded = if chosen_by_user {
            last
        } else {
            primary.clone()
        };
        self.store
            .set_ens_profile(user_id.as_str(), recorded.as_deref(), self.now_ms())
            .await?;
        self.refresh_ens_avatar(user_id, address, primary.as_deref())
            .await
    }

    /// Makes the ENS avatar (ENSIP-12) of the user's primary name their Matrix avatar,
    /// imported into the media repository, unless they chose another; drops the imported one
    /// when the record goes away. An avatar already imported is not fetched again.
    async fn refresh_ens_avatar(
        &self,
        user_id: &UserId,
        address: &str,
        name: Option<&str>,
    ) -> Result<()> {
        let (_, current) = self.store.profile(user_id.as_str()).await?;
        let (last_source, last_url) = self.store.ens_avatar(user_id.as_str()).await?;
        if current.is_some() && current != last_url {
            return Ok(());
        }
        let located = match name {
            Some(name) => {
                let owner: matrixon_chain::siwe::Address =
                    super::parse_address(address)?
                        .parse()
                        .map_err(|_| Error::invalid_param("not an address"))?;
                let resolver = Resolver {
                    chain: self.ens().map_err(ens_error)?,
                    gateway: &self.fetch,
                };
                resolver
                    .avatar(&self.chains, name, owner, &self.config.names.ipfs_gateway)
                    .await
                    .map_err(ens_error)?
            }
            None => None,
        };
        let Some(avatar) = located else {
            self.store
                .set_ens_avatar(user_id.as_str(), None, None)
                .await?;
            if current.is_some() {
                self.set_avatar_url(user_id, None).await?;
            }
            return Ok(());
        };
        let source = match &avatar {
            Avatar::Url(url) => url.clone(),
            Avatar::Data { bytes, .. } => {
                format!("data:sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
            }
        };
        if current.is_some() && last_source.as_deref() == Some(source.as_str()) {
            return Ok(());
        }
        let bytes = match avatar {
            Avatar::Data { bytes, .. } => bytes,
            Avatar::Url(url) => {
                let fetcher = Gateway {
                    max_bytes: MAX_AVATAR_BYTES,
                    ..self.fetch.clone()
                };
                fetcher
                    .get_page(&url)
                    .await
                    .map_err(|why| {
                        Error::new(
                            StatusCode::BAD_GATEWAY,
                            ErrorKind::Unknown,
                            format!("ENS avatar not fetched: {why}"),
                        )
                    })?
                    .1
            }
        };
        // The image's own header decides its type: a declared type is not trusted.
        let Some((content_type, _)) = super::media::raster_image(&bytes) else {
            tracing::info!(%user_id, %source, "ENS avatar is not a JPEG, PNG, GIF or WebP image");
            return Ok(());
        };
        let uri = self.store_media_bytes(user_id, content_type, bytes).await?;
        // Recorded first: a refresh cut short (the sign-in waits only so long) must never
        // leave an imported avatar looking like the user's own choice.
        self.store
            .set_ens_avatar(user_id.as_str(), Some(&source), Some(&uri))
            .await?;
        let mxc = ruma::OwnedMxcUri::from(uri.as_str());
        self.set_avatar_url(user_id, Some(&mxc)).await?;
        Ok(())
    }

    /// Refreshes the ENS profiles that are due (a bounded batch per call).
    pub async fn refresh_due_ens_profiles(&self) -> Result<()> {
        if self.ens().is_err() {
            return Ok(());
        }
        let interval = i64::try_from(self.config.names.refresh_interval_s.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        let due = self
            .store
            .ens_profiles_due(self.now_ms().saturating_sub(interval), 50)
            .await?;
        for user in due {
            let Ok(user_id) = UserId::parse(user.as_str()) else {
                continue;
            };
            if let Err(e) = self.refresh_ens_profile(&user_id).await {
                tracing::warn!(%user_id, error = %e, "refreshing an ENS display name failed");
                let last = self.store.ens_profile(user_id.as_str()).await?.flatten();
                self.store
                    .set_ens_profile(user_id.as_str(), last.as_deref(), self.now_ms())
                    .await?;
            }
        }
        Ok(())
    }

    /// The document of any DID this server resolves; a local user's did:web is answered
    /// here without fetching.
    pub async fn any_did_document(&self, identifier: &str) -> Result<Value> {
        let host = self.config.server_name.as_str().replace(':', "%3A");
        if let Some(segment) = identifier.strip_prefix(&format!("did:web:{host}:users:")) {
            let localpart: String = form_urlencoded::parse(format!("l={segment}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            return self.did_document(&localpart).await;
        }
        let parsed = did::parse(identifier).map_err(Error::invalid_param)?;
        within_deadline(async {
            parsed
                .document(identifier, &self.chains, &self.fetch)
                .await
                .map_err(did_error)
        })
        .await
    }

    /// The did:web document of a local user: linked wallets as verification methods, the
    /// Matrix ID as a service.
    pub async fn did_document(&self, localpart: &str) -> Result<Value> {
        let user_id = UserId::parse(format!("@{localpart}:{}", self.config.server_name))
            .map_err(|_| Error::not_found("No such user"))?;
        if self
            .store
            .user(&user_id)
            .await?
            .is_none_or(|u| u.deactivated)
        {
            return Err(Error::not_found("No such user"));
        }
        let host = self.config.server_name.as_str().replace(':', "%3A");
        let segment: String = url::form_urlencoded::byte_serialize(localpart.as_bytes()).collect();
        let id = format!("did:web:{host}:users:{segment}");
        let wallets = self.store.wallets(&user_id).await?;
        let methods: Vec<Value> = wallets
            .iter()
            .enumerate()
            .map(|(i, (address, _))| {
                json!({
                    "id": format!("{id}#wallet-{}", i + 1),
                    "type": "EcdsaSecp256k1RecoveryMethod2020",
                    "controller": id,
                    "blockchainAccountId": format!("eip155:1:{address}"),
                })
            })
            .collect();
        let references: Vec<Value> = methods.iter().map(|m| m["id"].clone()).collect();
        Ok(json!({
            "@context": [
                "https://www.w3.org/ns/did/v1",
                "https://w3id.org/security/suites/secp256k1recovery-2020/v2"
            ],
            "id": id,
            "verificationMethod": methods,
            "authentication": references,
            "assertionMethod": references,
            "service": [{
                "id": format!("{id}#matrix"),
                "type": "MatrixUser",
                "serviceEndpoint": format!("https://matrix.to/#/{user_id}"),
            }],
        }))
    }
}
