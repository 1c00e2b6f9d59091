//! Login, refresh, logout and login tokens.

use std::sync::Arc;

use axum::Router;
use ruma::OwnedMxcUri;
use ruma::api::client::{
    session::{
        get_login_token,
        get_login_types::{
            self,
            v3::{
                IdentityProvider, IdentityProviderBrand, LoginType, PasswordLoginType,
                SsoLoginType, TokenLoginType,
            },
        },
        login::{
            self,
            v3::{DiscoveryInfo, HomeserverInfo, LoginInfo},
        },
        logout, logout_all, refresh_token,
    },
    uiaa::UserIdentifier,
};

use crate::{
    api::media::LOGO_MEDIA_ID,
    http::{
        error::{Error, Result},
        ruma::{RouterExt, Ruma},
    },
    service::{Limit, SIWE_LOGIN_TYPE, SSO_IDP_ID, Services, UiaOperation},
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(login_types)
        .ruma(login)
        .ruma(refresh)
        .ruma(logout)
        .ruma(logout_all)
        .ruma(get_login_token)
}

/// # `GET /_matrix/client/v3/login`
async fn login_types(
    services: Arc<Services>,
    _: Ruma<get_login_types::v3::Request>,
) -> Result<get_login_types::v3::Response> {
    let mut token = TokenLoginType::new();
    token.get_login_token = true;
    let mut wallet = IdentityProvider::new(SSO_IDP_ID.to_owned(), "Ethereum wallet".to_owned());
    wallet.brand = Some(IdentityProviderBrand::from("io.matrixon.ethereum"));
    wallet.icon = Some(OwnedMxcUri::from(format!(
        "mxc://{}/{LOGO_MEDIA_ID}",
        services.config.server_name
    )));
    let mut sso = SsoLoginType::new();
    sso.identity_providers = vec![wallet];
    Ok(get_login_types::v3::Response::new(vec![
        LoginType::Password(PasswordLoginType::new()),
        LoginType::Token(token),
        LoginType::Sso(sso),
        LoginType::new(SIWE_LOGIN_TYPE, serde_json::Map::new())
            .map_err(|e| Error::Internal(anyhow::anyhow!("login type: {e}")))?,
    ]))
}

/// # `POST /_matrix/client/v3/login`
async fn login(
    services: Arc<Services>,
    req: Ruma<login::v3::Request>,
) -> Result<login::v3::Response> {
    let ip = req.client_ip.clone().unwrap_or_default();
    services.rate_limit(Limit::LoginPerIp, &ip)?;
    let request = req.body;
    let user_id = match &request.login_info {
        LoginInfo::Password(password) => {
            #[allow(deprecated)]
            let user = match (&password.identifier, &password.user) {
                (Some(UserIdentifier::Matrix(id)), _) => id.user.clone(),
                (None, Some(user)) => user.clone(),
                (Some(_), _) => {
                    return Err(Error::bad_json("Only m.id.user identifiers are supported"));
                }
                (None, None) => return Err(Error::bad_json("Missing identifier")),
            };
            let user_id = services.local_user_id(&user)?;
            services.rate_limit(Limit::LoginPerAccount, user_id.as_str())?;
            services
                .check_password(&user_id, &password.password)
                .await?;
            user_id
        }
        LoginInfo::Token(token) => {
            let user_id = services.consume_login_token(&token.token).await?;
            services.ensure_active(&user_id).await?;
            user_id
        }
        siwe if siwe.login_type() == SIWE_LOGIN_TYPE => {
            let data = siwe.data();
            let field = |name: &str| {
                data.get(name)
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        Error::bad_json(format!("{SIWE_LOGIN_TYPE} needs a string `{name}`"))
                    })
            };
            let (message, signature) = (field("message")?, field("signature")?);
            services.siwe_login(&message, &signature).await?
        }
        other => {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::Unknown,
                format!("Unsupported login type {}", other.login_type()),
            ));
        }
    };
    let session = services
        .start_session(
            &user_id,
            request.device_id,
            request.initial_device_display_name.as_deref(),
            request.refresh_token,
        )
        .await?;
    let mut response =
        login::v3::Response::new(session.user_id, session.access_token, session.device_id);
    response.refresh_token = session.refresh_token;
    response.expires_in = session.expires_in;
    response.well_known = Some(DiscoveryInfo::new(HomeserverInfo::new(
        services.config.public_baseurl(),
    )));
    #[allow(deprecated)]
    {
        response.home_server = Some(services.config.server_name.clone());
    }
    Ok(response)
}

/// # `POST /_matrix/client/v3/refresh`
async fn refresh(
    services: Arc<Services>,
    req: Ruma<refresh_token::v3::Request>,
) -> Result<refresh_token::v3::Response> {
    // OAuth sessions refresh at the token endpoint, where a replayed token is caught.
    if services
        .is_oauth_refresh_token(&req.body.refresh_token)
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!(e.description)))?
    {
        return Err(Error::unknown_token(false));
    }
    let session = services.refresh(&req.body.refresh_token).await?;
    let mut response = refresh_token::v3::Response::new(session.access_token);
    response.refresh_token = session.refresh_token;
    response.expires_in_ms = session.expires_in;
    Ok(response)
}

/// # `POST /_matrix/client/v3/logout`
async fn logout(
    services: Arc<Services>,
    req: Ruma<logout::v3::Request>,
) -> Result<logout::v3::Response> {
    services
        .store
        .delete_devices(&req.auth.user_id, &[req.auth.device_id])
        .await?;
    services.wake_device_watchers(&req.auth.user_id).await?;
    Ok(logout::v3::Response::new())
}

/// # `POST /_matrix/client/v3/logout/all`
async fn logout_all(
    services: Arc<Services>,
    req: Ruma<logout_all::v3::Request>,
) -> Result<logout_all::v3::Response> {
    services
        .store
        .delete_other_devices(&req.auth.user_id, None)
        .await?;
    services.wake_device_watchers(&req.auth.user_id).await?;
    Ok(logout_all::v3::Response::new())
}

/// # `POST /_matrix/client/v1/login/get_token`
async fn get_login_token(
    services: Arc<Services>,
    req: Ruma<get_login_token::v1::Request>,
) -> Result<get_login_token::v1::Response> {
    let user_id = &req.auth.user_id;
    services
        .reauthenticate(UiaOperation::GetLoginToken, user_id, req.body.auth.as_ref())
        .await?;
    let (token, lifetime) = services.mint_login_token(user_id).await?;
    Ok(get_login_token::v1::Response::new(lifetime, token))
}
