//! Registration and account management.

use std::sync::Arc;

use axum::Router;
use http::StatusCode;
use ruma::api::{
    client::account::{
        ThirdPartyIdRemovalStatus, change_password, check_registration_token_validity, deactivate,
        get_username_availability,
        register::{self, RegistrationKind},
        whoami,
    },
    error::ErrorKind,
};

use crate::{
    http::{
        error::{Error, Result},
        ruma::{RouterExt, Ruma},
    },
    service::{Limit, Services, UiaOperation, secrets},
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(register)
        .ruma(username_available)
        .ruma(registration_token_validity)
        .ruma(whoami)
        .ruma(change_password)
        .ruma(deactivate)
}

/// # `POST /_matrix/client/v3/register`
async fn register(
    services: Arc<Services>,
    req: Ruma<register::v3::Request>,
) -> Result<register::v3::Response> {
    services.rate_limit(
        Limit::RegisterPerIp,
        req.client_ip.as_deref().unwrap_or_default(),
    )?;
    let mut body = req.body;
    // As Synapse: user names are case-insensitive, so `Alice` registers `@alice`.
    body.username = body.username.map(|name| name.to_lowercase());
    if body.kind == RegistrationKind::Guest {
        if !services.config.registration.guest_access {
            return Err(Error::new(
                StatusCode::FORBIDDEN,
                ErrorKind::GuestAccessForbidden,
                "Guest access is disabled",
            ));
        }
        let user_id = services.create_guest().await?;
        let session = services
            .start_session(
                &user_id,
                None,
                body.initial_device_display_name.as_deref(),
                false,
            )
            .await?;
        let mut response = register::v3::Response::new(user_id);
        response.access_token = Some(session.access_token);
        response.device_id = Some(session.device_id);
        return Ok(response);
    }
    let Some(flows) = services.registration_flows() else {
        return Err(Error::forbidden("Registration is disabled on this server"));
    };
    // A guest becoming a full account keeps its id (Synapse's `guest_access_token`).
    let guest_token = serde_json::from_slice::<serde_json::Value>(&req.raw_body)
        .ok()
        .and_then(|b| b.get("guest_access_token")?.as_str().map(str::to_owned));
    // Refuse a taken or invalid name before the client goes through authentication.
    let guest = match &guest_token {
        Some(token) => Some(
            services
                .guest_to_upgrade(token, body.username.as_deref())
                .await?,
        ),
        None => {
            if let Some(username) = &body.username {
                services.check_username(username).await?;
            }
            None
        }
    };
    if let Some(password) = &body.password {
        Services::check_password_shape(password)?;
    }
    let outcome = services
        .user_interactive_auth(UiaOperation::Register, None, flows, body.auth.as_ref())
        .await?;
    let user_id = match guest {
        Some(guest) => {
            services
                .upgrade_guest(guest, body.password, outcome.registration_token.as_deref())
                .await?
        }
        None => {
            let localpart = body
                .username
                .unwrap_or_else(|| format!("u{}", secrets::random_alphanumeric(11).to_lowercase()));
            services
                .create_account(
                    &localpart,
                    body.password,
                    false,
                    outcome.registration_token.as_deref(),
                )
                .await?
        }
    };
    if body.inhibit_login {
        return Ok(register::v3::Response::new(user_id));
    }
    let session = services
        .start_session(
            &user_id,
            body.device_id,
            body.initial_device_display_name.as_deref(),
            body.refresh_token,
        )
        .await?;
    let mut response = register::v3::Response::new(user_id);
    response.access_token = Some(session.access_token);
    response.device_id = Some(session.device_id);
    response.refresh_token = session.refresh_token;
    response.expires_in = session.expires_in;
    Ok(response)
}

/// # `GET /_matrix/client/v3/register/available`
async fn username_available(
    services: Arc<Services>,
    req: Ruma<get_username_availability::v3::Request>,
) -> Result<get_username_availability::v3::Response> {
    services.rate_limit(
        Limit::RegisterPerIp,
        req.client_ip.as_deref().unwrap_or_default(),
    )?;
    services.check_username(&req.body.username).await?;
    Ok(get_username_availability::v3::Response::new(true))
}

/// # `GET /_matrix/client/v1/register/m.login.registration_token/validity`
async fn registration_token_validity(
    services: Arc<Services>,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> Result<check_registration_token_validity::v1::Response> {
    services.rate_limit(
        Limit::RegisterPerIp,
        req.client_ip.as_deref().unwrap_or_default(),
    )?;
    if services.registration_flows().is_none() {
        return Err(Error::forbidden("Registration is disabled on this server"));
    }
    let valid = services
        .store
        .registration_token(&req.body.token)
        .await?
        .is_some_and(|t| t.usable(services.now_ms()));
    Ok(check_registration_token_validity::v1::Response::new(valid))
}

/// # `GET /_matrix/client/v3/account/whoami`
async fn whoami(_: Arc<Services>, req: Ruma<whoami::v3::Request>) -> Result<whoami::v3::Response> {
    let mut response = whoami::v3::Response::new(req.auth.user_id, false);
    response.device_id = Some(req.auth.device_id);
    Ok(response)
}

/// # `POST /_matrix/client/v3/account/password`
async fn change_password(
    services: Arc<Services>,
    req: Ruma<change_password::v3::Request>,
) -> Result<change_password::v3::Response> {
    // The optional token is for password resets via e-mail, which this server does not offer.
    let session = req.auth.ok_or_else(Error::missing_token)?;
    Services::check_password_shape(&req.body.new_password)?;
    services
        .reauthenticate(
            UiaOperation::ChangePassword,
            &session.user_id,
            req.body.auth.as_ref(),
        )
        .await?;
    services
        .change_password(&session, req.body.new_password, req.body.logout_devices)
        .await?;
    Ok(change_password::v3::Response::new())
}

/// # `POST /_matrix/client/v3/account/deactivate`
async fn deactivate(
    services: Arc<Services>,
    req: Ruma<deactivate::v3::Request>,
) -> Result<deactivate::v3::Response> {
    let session = req.auth.ok_or_else(Error::missing_token)?;
    services
        .reauthenticate(
            UiaOperation::Deactivate,
            &session.user_id,
            req.body.auth.as_ref(),
        )
        .await?;
    services.deactivate(&session.user_id).await?;
    Ok(deactivate::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    ))
}
