//! Authentication chosen by the endpoint's type: what ruma declares is what the handler gets.

use std::future::Future;

use http::request::Parts;
use ruma::api::auth_scheme::{
    AccessToken, AccessTokenOptional, AppserviceTokenOptional, AuthScheme, NoAccessToken,
    NoAuthentication,
};

use super::error::{Error, Result};
use crate::service::{Services, Session};

/// Maps a ruma authentication scheme to the identity its handlers receive.
///
/// Endpoints that need a token get a [`Session`], optional ones an `Option<Session>`, the rest
/// `()`. A scheme without an implementation here cannot be routed, so a handler can never
/// forget to authenticate.
pub trait Authenticate: AuthScheme {
    /// What the handler receives.
    type Identity: Send + 'static;

    /// Checks the request's credentials.
    fn authenticate(
        services: &Services,
        token: Option<&str>,
        ip: Option<String>,
    ) -> impl Future<Output = Result<Self::Identity>> + Send;
}

impl Authenticate for AccessToken {
    type Identity = Session;

    async fn authenticate(
        services: &Services,
        token: Option<&str>,
        ip: Option<String>,
    ) -> Result<Session> {
        match token {
            Some(token) => services.authenticate(token, ip).await,
            None => Err(Error::missing_token()),
        }
    }
}

impl Authenticate for AccessTokenOptional {
    type Identity = Option<Session>;

    async fn authenticate(
        services: &Services,
        token: Option<&str>,
        ip: Option<String>,
    ) -> Result<Option<Session>> {
        match token {
            Some(token) => services.authenticate(token, ip).await.map(Some),
            None => Ok(None),
        }
    }
}

macro_rules! anonymous {
    ($($scheme:ty),*) => {$(
        impl Authenticate for $scheme {
            type Identity = ();

            async fn authenticate(_: &Services, _: Option<&str>, _: Option<String>) -> Result<()> {
                Ok(())
            }
        }
    )*};
}

// Application services are not supported yet, so their optional token on /login and
// /register is ignored like any other.
anonymous!(NoAuthentication, NoAccessToken, AppserviceTokenOptional);

/// The bearer token of a request: the `Authorization` header, else the `access_token` query
/// parameter (deprecated by the spec but still sent by some clients).
pub fn access_token(parts: &Parts) -> Result<Option<String>> {
    if let Some(header) = parts.headers.get(http::header::AUTHORIZATION) {
        let value = header.to_str().map_err(|_| Error::unknown_token(false))?;
        let (scheme, token) = value
            .split_once(' ')
            .ok_or_else(|| Error::unknown_token(false))?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(Error::unknown_token(false));
        }
        return Ok(Some(token.trim().to_owned()));
    }
    let query = parts.uri.query().unwrap_or_default();
    Ok(form_urlencoded_get(query, "access_token"))
}

fn form_urlencoded_get(query: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}
