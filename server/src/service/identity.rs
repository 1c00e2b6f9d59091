//! Identity servers, asked on behalf of this server's users (the Identity Service API v2):
//! finding the Matrix account bound to an e-mail address (invites by address), and binding
//! and unbinding a user's addresses. Lookups and binds carry the user's own identity-server
//! token; unbinds are signed as this server, which is how an identity server knows the
//! user's homeserver asks. Requests follow the federation address rules (no private
//! addresses unless `federation.ip_range_allow` lists them), with a time and size limit.

use std::time::Duration;

use base64::Engine;
use http::StatusCode;
use ruma::{OwnedUserId, ServerName, UserId, api::error::ErrorKind};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Services;
use crate::http::error::{Error, Result};

/// Largest answer read from an identity server.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Longest wait for an identity server.
const TIMEOUT: Duration = Duration::from_secs(15);

/// An e-mail address or phone number, as identity servers key them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreePid {
    /// `email` or `msisdn`.
    pub medium: String,
    /// The address, canonical (e-mail addresses lower-cased, as Synapse and Sydent keep them).
    pub address: String,
}

impl ThreePid {
    /// `medium` and `address` as a client sent them: 400 for a medium no identity server
    /// knows or an empty address.
    pub fn new(medium: &str, address: &str) -> Result<Self> {
        let address = address.trim();
        if address.is_empty() || address.len() > 500 {
            return Err(Error::invalid_param(
                "address must be a non-empty string of at most 500 bytes",
            ));
        }
        match medium {
            "email" => Ok(Self {
                medium: medium.to_owned(),
                address: address.to_lowercase(),
            }),
            "msisdn" => Ok(Self {
                medium: medium.to_owned(),
                address: address.to_owned(),
            }),
            _ => Err(Error::invalid_param(format!(
                "medium must be \"email\" or \"msisdn\", not {medium:?}"
            ))),
        }
    }
}

/// The id_server a client named, checked to be a server name (`host[:port]`).
fn server_name(id_server: &str) -> Result<&ServerName> {
    <&ServerName>::try_from(id_server).map_err(|_| {
        Error::invalid_param(format!(
            "id_server must be a server name (host or host:port), not {id_server:?}"
        ))
    })
}

/// Why an identity server could not be asked, as a client is told.
fn unreachable(id_server: &ServerName, why: impl std::fmt::Display) -> Error {
    Error::new(
        StatusCode::BAD_GATEWAY,
        ErrorKind::Unknown,
        format!("The identity server {id_server} could not be asked: {why}"),
    )
}

/// The v2 lookup hash of `pid` with `pepper`: unpadded URL-safe base64 of
/// SHA-256("address medium pepper").
fn lookup_hash(pid: &ThreePid, pepper: &str) -> String {
    let digest = Sha256::digest(format!("{} {} {pepper}", pid.address, pid.medium).as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// What an identity server answered: its status and JSON body (`Null` when not JSON).
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Services {
    /// Sends `request` for `path` with `body` to `id_server`, signed as this server when
    /// `signed`.
    async fn ask_identity_server(
        &self,
        id_server: &ServerName,
        request: http::request::Builder,
        path: &str,
        body: Option<&Value>,
        signed: bool,
    ) -> Result<Answer> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut request = request
            .uri(path)
            .body(bytes)
            .map_err(|e| Error::Internal(e.into()))?;
        if signed {
            let authorization = self.identity_server_authorization(id_server, path, body)?;
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, authorization);
        }
        let response = self
            .federation
            .https_direct(id_server, request, TIMEOUT, MAX_ANSWER_BYTES)
            .await
            .map_err(|why| unreachable(id_server, why))?;
        Ok(Answer {
            status: response.status(),
            body: serde_json::from_slice(response.body()).unwrap_or(Value::Null),
        })
    }

    /// The `X-Matrix` header of a request to an identity server, as Synapse signs them and
    /// Sydent checks them: the signed object names the identity server as `destination_is`
    /// (not `destination`), and the header carries no destination.
    fn identity_server_authorization(
        &self,
        id_server: &ServerName,
        path: &str,
        body: Option<&Value>,
    ) -> Result<http::HeaderValue> {
        let internal = |e: &dyn std::fmt::Display| Error::Internal(anyhow::anyhow!("signing: {e}"));
        let mut signed = json!({
            "method": "POST",
            "uri": path,
            "origin": self.config.server_name,
            "destination_is": id_server,
        });
        if let Some(content) = body {
            signed["content"] = content.clone();
        }
        let mut object: ruma::CanonicalJsonObject =
            serde_json::from_value(signed).map_err(|e| internal(&e))?;
        let origin = self.config.server_name.as_str();
        ruma::signatures::sign_json(origin, &self.signing_key, &mut object)
            .map_err(|e| internal(&e))?;
        let key_id = format!("ed25519:{}", self.signing_key.version());
        let signature = object
            .get("signatures")
            .and_then(|s| s.as_object())
            .and_then(|s| s.get(origin))
            .and_then(|s| s.as_object())
            .and_then(|s| s.get(&key_id))
            .and_then(|s| s.as_str())
            .ok_or_else(|| internal(&"no signature made"))?;
        http::HeaderValue::from_str(&format!(
            "X-Matrix origin=\"{origin}\",key=\"{key_id}\",sig=\"{signature}\""
        ))
        .map_err(|e| internal(&e))
    }

    /// The request builder for `method` with the user's identity-server `token`.
    fn with_token(method: http::Method, token: &str) -> http::request::Builder {
        http::Request::builder()
            .method(method)
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
    }

    /// The Matrix account bound to `pid` on `id_server`, asked with the inviting user's
    /// identity-server `token` (hashed lookup when the server offers it, as the spec asks).
    pub async fn identity_lookup(
        &self,
        id_server: &str,
        token: &str,
        pid: &ThreePid,
    ) -> Result<Option<OwnedUserId>> {
        let id_server = server_name(id_server)?;
        let details = self
            .ask_identity_server(
                id_server,
                Self::with_token(http::Method::GET, token),
                "/_matrix/identity/v2/hash_details",
                None,
                false,
            )
            .await?;
        let refused = |answer: &Answer| {
            let said = answer.body["error"].as_str().unwrap_or_default().to_owned();
            if answer.status == StatusCode::UNAUTHORIZED {
                Error::forbidden(format!(
                    "The identity server {id_server} did not accept the identity access token: {said}"
                ))
            } else {
                unreachable(id_server, format!("it answered {}: {said}", answer.status))
            }
        };
        if !details.status.is_success() {
            return Err(refused(&details));
        }
        let algorithms: Vec<&str> = details.body["algorithms"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let pepper = details.body["lookup_pepper"].as_str().unwrap_or_default();
        let (algorithm, key) = if algorithms.contains(&"sha256") {
            ("sha256", lookup_hash(pid, pepper))
        } else if algorithms.contains(&"none") {
            ("none", format!("{} {}", pid.address, pid.medium))
        } else {
            return Err(unreachable(
                id_server,
                "it offers no lookup algorithm this server knows (sha256, none)",
            ));
        };
        let found = self
            .ask_identity_server(
                id_server,
                Self::with_token(http::Method::POST, token),
                "/_matrix/identity/v2/lookup",
                Some(&json!({ "addresses": [key], "algorithm": algorithm, "pepper": pepper })),
                false,
            )
            .await?;
        if !found.status.is_success() {
            return Err(refused(&found));
        }
        Ok(found.body["mappings"][&key]
            .as_str()
            .and_then(|mxid| UserId::parse(mxid).ok()))
    }

    /// The account a third-party invite (`invite_3pid`, `/invite` by address) is for: 404
    /// `M_THREEPID_NOT_FOUND` when no account is bound to the address, since invitations
    /// that wait for one to be bound are not supported yet.
    pub async fn third_party_invitee(
        &self,
        invite: &ruma::api::client::membership::Invite3pid,
    ) -> Result<OwnedUserId> {
        let pid = ThreePid::new(invite.medium.as_str(), &invite.address)?;
        self.identity_lookup(&invite.id_server, &invite.id_access_token, &pid)
            .await?
            .ok_or_else(|| {
                Error::new(
                    StatusCode::NOT_FOUND,
                    ErrorKind::ThreepidNotFound,
                    format!(
                        "No Matrix account is bound to {} on {}; invitations that wait for \
                         the address to be bound are not supported yet",
                        pid.address, invite.id_server
                    ),
                )
            })
    }

    /// Binds the address the identity server validated in session `sid` to `user`, and
    /// remembers on which server, so that removing the address or the account unbinds it.
    pub async fn identity_bind(
        &self,
        user: &UserId,
        id_server: &str,
        token: &str,
        sid: &str,
        client_secret: &str,
    ) -> Result<ThreePid> {
        let id_server = server_name(id_server)?;
        let answer = self
            .ask_identity_server(
                id_server,
                Self::with_token(http::Method::POST, token),
                "/_matrix/identity/v2/3pid/bind",
                Some(&json!({ "sid": sid, "client_secret": client_secret, "mxid": user })),
                false,
            )
            .await?;
        let said = answer.body["error"].as_str().unwrap_or_default().to_owned();
        if !answer.status.is_success() {
            return Err(match answer.status {
                StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => Error::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::ThreepidAuthFailed,
                    format!("The identity server {id_server} refused the binding: {said}"),
                ),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::forbidden(format!(
                    "The identity server {id_server} refused the binding: {said}"
                )),
                status => unreachable(id_server, format!("it answered {status}: {said}")),
            });
        }
        let (Some(medium), Some(address)) = (
            answer.body["medium"].as_str(),
            answer.body["address"].as_str(),
        ) else {
            return Err(unreachable(
                id_server,
                "its answer to the binding names no medium and address",
            ));
        };
        let pid = ThreePid::new(medium, address)?;
        self.store
            .remember_threepid_binding(user.as_str(), &pid.medium, &pid.address, id_server.as_str())
            .await?;
        Ok(pid)
    }

    /// Unbinds `pid` from `user` on `id_server`, or on every server it was bound on through
    /// this server when `None`: whether every server that was asked did it (`false` when
    /// there was none to ask, as the spec's `no-support`).
    pub async fn identity_unbind(
        &self,
        user: &UserId,
        id_server: Option<&str>,
        pid: &ThreePid,
    ) -> Result<bool> {
        let servers = match id_server {
            Some(server) => vec![server_name(server)?.to_owned()],
            None => self
                .store
                .threepid_binding_servers(user.as_str(), &pid.medium, &pid.address)
                .await?
                .iter()
                .filter_map(|s| ServerName::parse(s).ok())
                .collect(),
        };
        let mut all = !servers.is_empty();
        for server in servers {
            let body = json!({
                "mxid": user,
                "threepid": { "medium": pid.medium, "address": pid.address },
            });
            let answer = self
                .ask_identity_server(
                    &server,
                    http::Request::builder().method(http::Method::POST),
                    "/_matrix/identity/v2/3pid/unbind",
                    Some(&body),
                    true,
                )
                .await;
            let done = match &answer {
                // Not bound there (any more) is as good as unbound.
                Ok(a) => a.status.is_success() || a.status == StatusCode::NOT_FOUND,
                Err(_) => false,
            };
            if done {
                self.store
                    .forget_threepid_binding(
                        user.as_str(),
                        &pid.medium,
                        &pid.address,
                        server.as_str(),
                    )
                    .await?;
            } else {
                tracing::warn!(%user, %server, "unbinding a 3PID failed: {:?}", answer.err());
                all = false;
            }
        }
        Ok(all)
    }

    /// Unbinds every address `user` bound through this server (a deactivated account keeps
    /// none): whether there were some and every one was unbound (failures are logged).
    pub async fn identity_unbind_all(&self, user: &UserId) -> Result<bool> {
        let bindings = self.store.threepid_bindings(user.as_str()).await?;
        let mut all = !bindings.is_empty();
        for (medium, address) in bindings {
            let pid = ThreePid { medium, address };
            all &= self.identity_unbind(user, None, &pid).await?;
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_hashes_follow_the_spec_example() {
        // The Identity Service API's example: "alice@example.com email matrixrocks".
        let pid = ThreePid::new("email", "Alice@Example.com").expect("valid");
        assert_eq!(
            lookup_hash(&pid, "matrixrocks"),
            "4kenr7N9drpCJ4AfalmlGQVsOn3o2RHjkADUpXJWZUc"
        );
    }

    #[test]
    fn bad_media_and_addresses_are_refused() {
        assert!(ThreePid::new("carrier-pigeon", "coo").is_err());
        assert!(ThreePid::new("email", "  ").is_err());
        assert!(server_name("evil.example/path?").is_err());
        assert!(server_name("id.example.org:8443").is_ok());
    }
}
