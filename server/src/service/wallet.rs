//! Sign-In with Ethereum: nonces, message verification, and wallet accounts.

use std::time::Duration;

use http::StatusCode;
use matrixon_chain::{
    rpc::parse_caip2,
    siwe::{self, Expectations, Message, VerifyError},
};
use ruma::{OwnedUserId, UserId, api::error::ErrorKind};
use time::OffsetDateTime;

use super::{Services, secrets};
use crate::{
    config::WalletRegistration,
    http::error::{Error, Result},
    store::CreateAccount,
};

/// The login type dApps use for a signed SIWE message.
pub const SIWE_LOGIN_TYPE: &str = "io.matrixon.login.siwe";

const NONCE_KIND: &str = "siwe";

/// What a client needs to build a sign-in message the server will accept.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SiweParameters {
    /// Single-use nonce for the message's `Nonce` field.
    pub nonce: String,
    /// When the nonce stops working, ms since the epoch.
    pub expires_at_ms: i64,
    /// The message's domain.
    pub domain: String,
    /// The message's URI.
    pub uri: String,
    /// The message's statement.
    pub statement: String,
    /// The message's version.
    pub version: &'static str,
    /// Chains the message may name (CAIP-2).
    pub chain_ids: Vec<String>,
}

fn forbidden(why: impl std::fmt::Display) -> Error {
    Error::forbidden(format!("Sign-in refused: {why}"))
}

impl Services {
    /// Issues a fresh single-use nonce with the parameters the message must carry.
    pub async fn siwe_parameters(&self) -> Result<SiweParameters> {
        let nonce = secrets::random_alphanumeric(24);
        let ttl_ms =
            i64::try_from(self.config.wallet.nonce_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let expires_at_ms = self.now_ms().saturating_add(ttl_ms);
        self.remember_nonce(NONCE_KIND, &nonce, expires_at_ms)
            .await?;
        Ok(SiweParameters {
            nonce,
            expires_at_ms,
            domain: self.config.wallet_domain(),
            uri: self.config.wallet_uri(),
            statement: self.siwe_statement(),
            version: "1",
            chain_ids: self.config.wallet.chains.clone(),
        })
    }

    pub(super) fn siwe_statement(&self) -> String {
        self.config
            .wallet
            .statement
            .clone()
            .unwrap_or_else(|| format!("Sign in to {}", self.config.server_name))
    }

    /// Verifies a signed sign-in message and returns the account it signs in to, creating
    /// a wallet account on first sign-in when policy allows. The nonce is spent either way.
    pub async fn siwe_login(&self, text: &str, signature_hex: &str) -> Result<OwnedUserId> {
        let address = self.verify_siwe(text, signature_hex).await?;
        let user_id = match self.store.wallet_owner(&address).await? {
            Some(user_id) => {
                self.ensure_active(&user_id).await?;
                // A wallet account reserved by an invite is the wallet's from now on.
                self.store.claim_reserved(user_id.as_str()).await?;
                user_id
            }
            None => self.create_wallet_account(&address).await?,
        };
        // The display name follows the wallet's primary ENS name unless the user chose one.
        // A slow chain must not hold up the sign-in: past a few seconds the periodic
        // refresh takes over.
        let refresh = self.refresh_ens_profile(&user_id);
        match tokio::time::timeout(std::time::Duration::from_secs(3), refresh).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(%user_id, error = %e, "ENS profile not refreshed at sign-in")
            }
            Err(_) => tracing::info!(%user_id, "ENS profile refresh left to the periodic job"),
        }
        Ok(user_id)
    }

    /// Proves that `user_id` controls a wallet linked to it (the UIA stage of wallet accounts).
    pub async fn siwe_prove(
        &self,
        user_id: &UserId,
        text: &str,
        signature_hex: &str,
    ) -> Result<()> {
        let address = self.verify_siwe(text, signature_hex).await?;
        match self.store.wallet_owner(&address).await? {
            Some(owner) if owner == user_id => Ok(()),
            _ => Err(forbidden("this wallet is not linked to your account")),
        }
    }

    /// Links the wallet that signed `text` to `user_id` (the signature proves control).
    pub async fn link_wallet(
        &self,
        user_id: &UserId,
        text: &str,
        signature_hex: &str,
    ) -> Result<String> {
        let address = self.verify_siwe(text, signature_hex).await?;
        let mut owner = self
            .store
            .link_wallet(user_id, &address, self.now_ms())
            .await?;
        // An account reserved for this wallet by an invite, never signed in to, gives way to
        // the wallet's owner: the reservation is released (deactivated) and the link made.
        if owner != user_id
            && self
                .store
                .release_reserved(owner.as_str(), &address)
                .await?
        {
            tracing::info!(reserved = %owner, %user_id, "reserved wallet account released");
            owner = self
                .store
                .link_wallet(user_id, &address, self.now_ms())
                .await?;
        }
        if owner != user_id {
            return Err(Error::forbidden("This wallet is linked to another account"));
        }
        self.wallet_holdings_changed(user_id, &address).await?;
        Ok(address)
    }

    /// Unlinks `address` from `user_id`, unless it is the account's last way to sign in.
    pub async fn unlink_wallet(&self, user_id: &UserId, address: &str) -> Result<()> {
        let address = address.to_ascii_lowercase();
        let wallets = self.store.wallets(user_id).await?;
        if !wallets.iter().any(|(a, _)| *a == address) {
            return Err(Error::not_found(
                "This wallet is not linked to your account",
            ));
        }
        let has_password = self
            .store
            .user(user_id)
            .await?
            .is_some_and(|u| u.password_hash.is_some());
        if wallets.len() == 1 && !has_password {
            return Err(Error::forbidden(
                "This is the account's only wallet and it has no password: it cannot be unlinked",
            ));
        }
        self.store.unlink_wallet(user_id, &address).await?;
        self.wallet_holdings_changed(user_id, &address).await
    }

    /// The account a wallet signs in to (linked or its own wallet account), if any: the
    /// lookup behind resolving addresses, gates and names.
    pub async fn user_for_wallet(&self, address: &str) -> Result<Option<OwnedUserId>> {
        Ok(self.store.wallet_owner(&parse_address(address)?).await?)
    }

    /// Checks a signed message completely (nonce spent first) and returns the signer's
    /// lower-case address.
    async fn verify_siwe(&self, text: &str, signature_hex: &str) -> Result<String> {
        let message: Message = text.parse().map_err(forbidden)?;
        let now = self.now_ms();
        if !self.spend_nonce(NONCE_KIND, &message.nonce).await? {
            return Err(forbidden(
                "this sign-in request has expired or was already used; start again",
            ));
        }
        let hex = signature_hex.strip_prefix("0x").unwrap_or(signature_hex);
        let signature = hex::decode(hex).map_err(|_| forbidden("the signature is not hex"))?;
        let chain_ids: Vec<u64> = self
            .config
            .wallet
            .chains
            .iter()
            .filter_map(|c| parse_caip2(c).ok())
            .collect();
        let uri = self.config.wallet_uri();
        let origin = origin_of(&uri);
        let domain = self.config.wallet_domain();
        let expect = Expectations {
            domain: &domain,
            scheme: uri.split_once("://").map(|(scheme, _)| scheme),
            uri_origin: Some(&origin),
            chain_ids: &chain_ids,
            nonce: None, // spent above, in the store every instance shares
            now: OffsetDateTime::from_unix_timestamp_nanos(i128::from(now) * 1_000_000)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            clock_skew: Duration::from_secs(self.config.wallet.clock_skew_s),
            reject_future_issued_at: true,
        };
        siwe::check_fields(&message, &expect).map_err(forbidden)?;
        match siwe::check_signature(text, &message, &signature, &self.chains).await {
            Ok(_) => {}
            Err(VerifyError::Unavailable(why)) => {
                // The reason names provider URLs, which may carry API keys: logged, not sent.
                tracing::warn!(chain_id = message.chain_id, %why, "contract-wallet check could not reach its chain");
                return Err(Error::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorKind::Unknown,
                    format!(
                        "The wallet's chain (eip155:{}) could not be asked; try again later",
                        message.chain_id
                    ),
                ));
            }
            Err(other) => return Err(forbidden(other)),
        }
        Ok(format!("{:#x}", message.address))
    }

    async fn create_wallet_account(&self, address: &str) -> Result<OwnedUserId> {
        match self.config.wallet.registration {
            WalletRegistration::Open => {}
            WalletRegistration::Allowlist
                if self
                    .config
                    .wallet
                    .allowlist
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(address)) => {}
            WalletRegistration::Allowlist => {
                return Err(forbidden("this wallet is not on the server's allowlist"));
            }
            WalletRegistration::Closed => {
                return Err(forbidden(
                    "no account is linked to this wallet and wallet registration is closed",
                ));
            }
        }
        self.reserve_wallet_account(address).await
    }

    /// Creates the account `@<address>` for a wallet (at its first sign-in, or when someone
    /// invites it by name before that); the account of a concurrent creation when one won.
    pub(crate) async fn reserve_wallet_account(&self, address: &str) -> Result<OwnedUserId> {
        let user_id = UserId::parse(format!("@{address}:{}", self.config.server_name))
            .map_err(|e| Error::Internal(anyhow::anyhow!("wallet user ID: {e}")))?;
        match self
            .store
            .create_wallet_account(&user_id, address, self.now_ms())
            .await?
        {
            CreateAccount::Created => {
                tracing::info!(%user_id, "wallet account created");
                Ok(user_id)
            }
            // Lost a race with a concurrent first sign-in of the same wallet: use its account.
            CreateAccount::Taken | CreateAccount::TokenUnusable => {
                match self.store.wallet_owner(address).await? {
                    Some(owner) => Ok(owner),
                    None => Err(forbidden(
                        "the wallet's user ID is taken by another account",
                    )),
                }
            }
        }
    }
}

/// Reads an address as people paste it, to lower-case hex: `0x` and 40 hex digits; in mixed
/// case it must be a valid EIP-55 checksum, so a mistyped address is refused, not looked up.
pub fn parse_address(text: &str) -> Result<String> {
    matrixon_chain::gate::parse_address(text)
        .map(|address| format!("{address:#x}"))
        .map_err(|why| Error::invalid_param(format!("Not an Ethereum address: {why}")))
}

/// `scheme://authority` of a URL.
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!(
            "{scheme}://{}",
            rest.split(['/', '?', '#']).next().unwrap_or_default()
        ),
        None => url.to_owned(),
    }
}
