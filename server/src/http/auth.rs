//! Authentication chosen by the endpoint's type: what ruma declares is what the handler gets.

use std::future::Future;

use bytes::Bytes;
use http::request::Parts;
use ruma::{
    OwnedServerName,
    api::{
        auth_scheme::{
            AccessToken, AccessTokenOptional, AppserviceTokenOptional, AuthScheme, NoAccessToken,
            NoAuthentication,
        },
        federation::authentication::ServerSignatures,
    },
};

use super::error::{Error, Result};
use crate::service::{Services, Session};

/// What a request offers to authenticate itself.
pub struct Credentials<'a> {
    /// Its bearer token.
    pub token: Option<&'a str>,
    /// The peer address.
    pub ip: Option<String>,
    /// Its head.
    pub parts: &'a Parts,
    /// Its body (read before authenticating only when the scheme signs it).
    pub body: &'a Bytes,
}

/// Maps a ruma authentication scheme to the identity its handlers receive.
///
/// Endpoints that need a token get a [`Session`], optional ones an `Option<Session>`, the rest
/// `()`. A scheme without an implementation here cannot be routed, so a handler can never
/// forget to authenticate.
pub trait Authenticate: AuthScheme {
    /// What the handler receives.
    type Identity: Send + 'static;

    /// Whether the body is covered by the credentials, and so read before checking them.
    const SIGNS_BODY: bool = false;

    /// Checks the request's credentials.
    fn authenticate(
        services: &Services,
        credentials: Credentials<'_>,
    ) -> impl Future<Output = Result<Self::Identity>> + Send;

    /// Whether the caller is a guest (whose requests are limited to what guests may do).
    fn is_guest(_: &Self::Identity) -> bool {
        false
    }
}

impl Authenticate for AccessToken {
    type Identity = Session;

    async fn authenticate(services: &Services, credentials: Credentials<'_>) -> Result<Session> {
        match credentials.token {
            Some(token) => services.authenticate(token, credentials.ip).await,
            None => Err(Error::missing_token()),
        }
    }

    fn is_guest(session: &Session) -> bool {
        session.is_guest
    }
}

impl Authenticate for AccessTokenOptional {
    type Identity = Option<Session>;

    async fn authenticate(
        services: &Services,
        credentials: Credentials<'_>,
    ) -> Result<Option<Session>> {
        match credentials.token {
            Some(token) => services.authenticate(token, credentials.ip).await.map(Some),
            None => Ok(None),
        }
    }

    fn is_guest(session: &Option<Session>) -> bool {
        session.as_ref().is_some_and(|s| s.is_guest)
    }
}

macro_rules! anonymous {
    ($($scheme:ty),*) => {$(
        impl Authenticate for $scheme {
            type Identity = ();

            async fn authenticate(_: &Services, _: Credentials<'_>) -> Result<()> {
                Ok(())
            }
        }
    )*};
}

// Application services are not supported yet, so their optional token on /login and
// /register is ignored like any other.
anonymous!(NoAuthentication, NoAccessToken, AppserviceTokenOptional);

impl Authenticate for ServerSignatures {
    /// The server that signed the request.
    type Identity = OwnedServerName;

    const SIGNS_BODY: bool = true;

    async fn authenticate(
        services: &Services,
        credentials: Credentials<'_>,
    ) -> Result<OwnedServerName> {
        Ok(services
            .verify_federation_request(credentials.parts, credentials.body)
            .await?)
    }
}

/// The bearer token of a request: an `Authorization: Bearer` header, else the `access_token`
/// query parameter (deprecated by the spec but still sent by some clients).
///
/// Other `Authorization` schemes are not Matrix tokens and are ignored, so that a reverse
/// proxy's Basic auth neither breaks public endpoints nor reads as a bad token.
pub fn access_token(parts: &Parts) -> Option<String> {
    let bearer = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|header| {
            let value = String::from_utf8_lossy(header.as_bytes());
            let (scheme, token) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    bearer.or_else(|| form_urlencoded_get(parts.uri.query().unwrap_or_default(), "access_token"))
}

fn form_urlencoded_get(query: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// The caller of a non-ruma endpoint that needs an access token.
pub struct Authenticated(pub Session);

impl axum::extract::FromRequestParts<std::sync::Arc<Services>> for Authenticated {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        services: &std::sync::Arc<Services>,
    ) -> Result<Self> {
        let ip = super::ruma::client_ip(parts);
        let token = access_token(parts);
        let credentials = Credentials {
            token: token.as_deref(),
            ip,
            parts,
            body: &Bytes::new(),
        };
        let session = AccessToken::authenticate(services, credentials).await?;
        if session.is_guest {
            super::guests::ensure_guest_may(&parts.method, parts.uri.path())?;
        }
        Ok(Self(session))
    }
}
