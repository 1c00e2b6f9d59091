//! Wallet single sign-on: what the wallet page that ordinary clients open needs.
//!
//! An unmodified Matrix client (Element) knows `m.login.sso`: it sends the browser to
//! `/login/sso/redirect?redirectUrl=…`, and later logs in with the `loginToken` it gets
//! back. Here the "identity provider" is the user's own wallet: the page has it sign a
//! SIWE message, and the server turns a valid signature into a one-time login token.

use ruma::{UserId, api::client::uiaa::AuthType};
use url::Url;

use super::{SIWE_LOGIN_TYPE, Services, secrets};
use crate::http::error::{Error, Result};

/// The identity provider id `GET /login` advertises under `m.login.sso`.
pub const SSO_IDP_ID: &str = "ethereum";

/// Schemes a browser would run or read locally rather than leave for: never a destination.
const UNSAFE_SCHEMES: &[&str] = &["javascript", "data", "vbscript", "file", "blob", "about"];

/// Where the browser goes once a wallet has signed in.
#[derive(Debug, serde::Serialize)]
pub struct SsoRedirect {
    /// The client's URL with `loginToken` added to its query.
    pub redirect_to: String,
    /// Whether the user must first confirm the destination (not in `sso.client_whitelist`).
    pub confirm: bool,
    /// The destination as people read it (its host, or the whole URL for app schemes).
    pub destination: String,
    /// The account the token logs in to.
    pub user_id: String,
}

impl Services {
    /// Checks a client's `redirectUrl`: an absolute URL whose scheme cannot run script here.
    pub fn sso_redirect_target(&self, raw: &str) -> Result<Url> {
        let url = Url::parse(raw).map_err(|e| {
            Error::invalid_param(format!("redirectUrl is not an absolute URL: {e}"))
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            // `https://trusted.example@evil.example/` reads as trusted but goes to evil.
            return Err(Error::invalid_param(
                "redirectUrl may not contain a user name or password",
            ));
        }
        if UNSAFE_SCHEMES.contains(&url.scheme()) {
            return Err(Error::invalid_param(format!(
                "redirectUrl may not use the {}: scheme",
                url.scheme()
            )));
        }
        Ok(url)
    }

    /// Builds a sign-in message with this server's parameters for a wallet page or a dApp
    /// without a SIWE library. The nonce must come from the nonce endpoint.
    pub fn siwe_message(&self, address: &str, chain_id: u64, nonce: &str) -> Result<String> {
        use matrixon_chain::siwe::{Address, Message, Timestamp};

        let address: Address = address
            .parse()
            .map_err(|_| Error::invalid_param("address is not a 20-byte hex address"))?;
        let caip2 = format!("eip155:{chain_id}");
        if !self.config.wallet.chains.contains(&caip2) {
            return Err(Error::invalid_param(format!(
                "This server accepts sign-ins on {} only, not on {caip2}",
                self.config.wallet.chains.join(", ")
            )));
        }
        let uri = self.config.wallet_uri();
        let now =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.now_ms()) * 1_000_000)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let ttl = time::Duration::seconds(
            i64::try_from(self.config.wallet.nonce_ttl_s).unwrap_or(i64::MAX),
        );
        let message = Message {
            scheme: uri.split_once("://").map(|(scheme, _)| scheme.to_owned()),
            domain: self.config.wallet_domain(),
            address,
            statement: Some(self.siwe_statement()),
            uri,
            version: "1".to_owned(),
            chain_id,
            nonce: nonce.to_owned(),
            issued_at: Timestamp::at(now),
            expiration_time: Some(Timestamp::at(now.saturating_add(ttl))),
            not_before: None,
            request_id: None,
            resources: Vec::new(),
        };
        message
            .validate()
            .map_err(|e| Error::invalid_param(e.to_string()))?;
        Ok(message.to_string())
    }

    /// Signs in with a wallet on the SSO page: a one-time login token for the client.
    pub async fn sso_login(
        &self,
        redirect_url: &str,
        message: &str,
        signature: &str,
    ) -> Result<SsoRedirect> {
        let mut target = self.sso_redirect_target(redirect_url)?;
        // Compared in the form the browser will follow, so spelling tricks cannot match.
        let confirm = !self
            .config
            .sso
            .client_whitelist
            .iter()
            .any(|prefix| target.as_str().starts_with(prefix.as_str()));
        let user_id = self.siwe_login(message, signature).await?;
        let (token, _) = self.mint_login_token(&user_id).await?;
        target.query_pairs_mut().append_pair("loginToken", &token);
        let destination = match target.host_str() {
            Some(host) if matches!(target.scheme(), "http" | "https") => match target.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            },
            _ => format!("{}:", target.scheme()),
        };
        Ok(SsoRedirect {
            redirect_to: target.into(),
            confirm,
            destination,
            user_id: user_id.to_string(),
        })
    }

    /// Completes a wallet stage (`m.login.sso` or the SIWE stage) of a UIA session from the
    /// fallback page; the client then finishes the operation with just the session id.
    pub async fn sso_authenticate(
        &self,
        session: &str,
        stage: &str,
        message: &str,
        signature: &str,
    ) -> Result<()> {
        if stage != AuthType::Sso.as_str() && stage != SIWE_LOGIN_TYPE {
            return Err(Error::invalid_param(format!(
                "The wallet page cannot complete the {stage} stage"
            )));
        }
        let now = self.now_ms();
        let row = match secrets::is_token_shaped(session) {
            true => self
                .store
                .uia_session(session)
                .await?
                .filter(|row| row.expires_ms > now),
            false => None,
        };
        let Some(row) = row else {
            return Err(Error::forbidden(
                "This authentication session is unknown or has expired; start again in your app",
            ));
        };
        let Some(user_id) = row.user_id.as_deref() else {
            return Err(Error::forbidden(
                "This authentication session is not for an existing account",
            ));
        };
        self.siwe_prove(user_id, message, signature).await?;
        let mut completed = row.completed;
        if !completed.iter().any(|s| s == stage) {
            completed.push(stage.to_owned());
        }
        self.store.set_uia_completed(session, &completed).await?;
        tracing::info!(%user_id, stage, "UIA stage completed on the wallet page");
        Ok(())
    }

    /// What a UIA session is for, as the fallback page tells the user: `(account, action)`.
    pub async fn uia_session_summary(&self, session: &str) -> Result<(String, &'static str)> {
        let now = self.now_ms();
        let row = match secrets::is_token_shaped(session) {
            true => self
                .store
                .uia_session(session)
                .await?
                .filter(|row| row.expires_ms > now),
            false => None,
        };
        let Some((row, user_id)) = row.and_then(|row| row.user_id.clone().map(|u| (row, u))) else {
            return Err(Error::not_found(
                "Unknown or expired authentication session",
            ));
        };
        let action = match row.operation.as_str() {
            "delete_devices" => "sign out and remove devices",
            "deactivate" => "deactivate the account",
            "change_password" => "change the account's password",
            "get_login_token" => "sign in on another device",
            "manage_wallets" => "link or unlink a wallet",
            "replace_cross_signing" => "reset your encryption identity (cross-signing keys)",
            _ => "make a change that needs your confirmation",
        };
        Ok((user_id.to_string(), action))
    }

    /// The wallet stages an account may use in UIA (none without a linked wallet).
    pub(super) async fn wallet_stages(&self, user_id: &UserId) -> Result<Vec<AuthType>> {
        Ok(if self.store.has_wallet(user_id).await? {
            vec![AuthType::Sso, AuthType::from(SIWE_LOGIN_TYPE)]
        } else {
            Vec::new()
        })
    }
}
