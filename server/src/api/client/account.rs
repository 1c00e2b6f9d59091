//! Registration and account management.

use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::post};
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

use serde_json::{Value, json};

use crate::{
    http::{
        error::{Error, Result},
        ruma::{RouterExt, Ruma},
    },
    service::{
        Limit, Services, UiaOperation,
        registration::{Registration, RegistrationParams},
        secrets,
    },
};

pub(super) fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_matrix/client/r0/register", post(register))
        .route("/_matrix/client/v3/register", post(register))
        .ruma(username_available)
        .ruma(registration_token_validity)
        .ruma(whoami)
        .ruma(change_password)
        .ruma(deactivate)
}

/// # `POST /_matrix/client/v3/register`
///
/// Answered by hand: with `inhibit_login` the answer has no `device_id` or `access_token`
/// keys at all (ruma writes `null`s, which SyTest and strict clients refuse).
async fn register(
    State(services): State<Arc<Services>>,
    req: Ruma<register::v3::Request>,
) -> Result<Json<Value>> {
    services.rate_limit(
        Limit::RegisterPerIp,
        req.client_ip.as_deref().unwrap_or_default(),
    )?;
    let body = req.body;
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
        return Ok(Json(json!({
            "user_id": user_id,
            "access_token": session.access_token,
            "device_id": session.device_id,
        })));
    }
    let Some(flows) = services.registration_flows() else {
        return Err(Error::forbidden("Registration is disabled on this server"));
    };
    let params = match services.registration_request(&body, &req.raw_body).await? {
        Registration::Pending(params) => params,
        Registration::Replay(user_id) => {
            // The session already made this account: the same answer again, as Synapse.
            return sign_in(&services, user_id, &RegistrationParams::default(), &body).await;
        }
    };
    // Refuse a taken or invalid name before the client goes through authentication. A
    // guest becoming a full account keeps its id (Synapse's `guest_access_token`).
    let guest = match &params.guest_access_token {
        Some(token) => Some(
            services
                .guest_to_upgrade(token, params.username.as_deref())
                .await?,
        ),
        None => {
            if let Some(username) = &params.username {
                services.check_username(username).await?;
            }
            None
        }
    };
    let outcome = match services
        .user_interactive_auth(UiaOperation::Register, "", None, flows, body.auth.as_ref())
        .await
    {
        Ok(outcome) => outcome,
        Err(Error::Uia(info)) => {
            // What the client sent with this step is remembered for the next ones.
            if let Some(session) = &info.session {
                services.remember_registration(session, &params).await?;
            }
            return Err(Error::Uia(info));
        }
        Err(e) => return Err(e),
    };
    let token = outcome.registration_token.as_deref();
    let user_id = match guest {
        Some(guest) => {
            services
                .upgrade_guest(guest, params.password_hash.clone(), token)
                .await?
        }
        None => {
            let localpart = params
                .username
                .clone()
                .unwrap_or_else(|| format!("u{}", secrets::random_alphanumeric(11).to_lowercase()));
            services
                .create_account_hashed(&localpart, params.password_hash.clone(), false, token)
                .await?
        }
    };
    if let Some(session) = body.auth.as_ref().and_then(|auth| auth.session()) {
        services.registration_done(session, &user_id).await?;
    }
    sign_in(&services, user_id, &params, &body).await
}

/// The answer to a completed registration: a new device and its tokens, unless the request
/// (now or when the session began) asked for `inhibit_login`.
async fn sign_in(
    services: &Services,
    user_id: ruma::OwnedUserId,
    params: &RegistrationParams,
    body: &register::v3::Request,
) -> Result<Json<Value>> {
    if params.inhibit_login || body.inhibit_login {
        return Ok(Json(json!({ "user_id": user_id })));
    }
    let device_id = params
        .device_id
        .as_deref()
        .map(ruma::OwnedDeviceId::from)
        .or_else(|| body.device_id.clone());
    let display_name = params
        .initial_device_display_name
        .as_deref()
        .or(body.initial_device_display_name.as_deref());
    let session = services
        .start_session(
            &user_id,
            device_id,
            display_name,
            params.refresh_token || body.refresh_token,
        )
        .await?;
    let mut response = json!({
        "user_id": user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
    });
    if let Some(refresh_token) = session.refresh_token {
        response["refresh_token"] = Value::from(refresh_token);
    }
    if let Some(expires_in) = session.expires_in {
        response["expires_in_ms"] =
            Value::from(u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX));
    }
    Ok(Json(response))
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
    let unbound = services
        .deactivate(&session.user_id, req.body.erase)
        .await?;
    Ok(deactivate::v3::Response::new(if unbound {
        ThirdPartyIdRemovalStatus::Success
    } else {
        ThirdPartyIdRemovalStatus::NoSupport
    }))
}
