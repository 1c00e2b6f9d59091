//! User-interactive authentication (UIA): flows, sessions and stage checks.

use http::StatusCode;
use ruma::{
    UserId,
    api::{
        client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier},
        error::{ErrorKind, StandardErrorBody},
    },
};

use super::{SIWE_LOGIN_TYPE, Services, secrets};
use crate::http::error::{Error, Result};

/// What a UIA session authorises; a session cannot be replayed for another operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UiaOperation {
    /// `POST /register`.
    Register,
    /// `DELETE /devices/{id}` and `POST /delete_devices`.
    DeleteDevices,
    /// `POST /account/deactivate`.
    Deactivate,
    /// `POST /account/password`.
    ChangePassword,
    /// `POST /login/get_token`.
    GetLoginToken,
    /// Linking or unlinking a wallet.
    ManageWallets,
    /// Replacing cross-signing keys (`POST /keys/device_signing/upload`).
    ReplaceCrossSigning,
}

impl UiaOperation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::DeleteDevices => "delete_devices",
            Self::Deactivate => "deactivate",
            Self::ChangePassword => "change_password",
            Self::GetLoginToken => "get_login_token",
            Self::ManageWallets => "manage_wallets",
            Self::ReplaceCrossSigning => "replace_cross_signing",
        }
    }
}

/// What the completed authentication proved, for the operation to use.
#[derive(Clone, Debug, Default)]
pub struct UiaOutcome {
    /// The registration token presented, still to be consumed by the registration.
    pub registration_token: Option<String>,
}

impl Services {
    /// The flows an existing account can authenticate with: its password, its wallet, or both.
    pub async fn account_flows(&self, user_id: &UserId) -> Result<Vec<AuthFlow>> {
        let mut flows = Vec::new();
        if self
            .store
            .user(user_id)
            .await?
            .is_some_and(|u| u.password_hash.is_some())
        {
            flows.push(AuthFlow::new(vec![AuthType::Password]));
        }
        // m.login.sso is the wallet page (for clients like Element); the SIWE stage is for dApps.
        for stage in self.wallet_stages(user_id).await? {
            flows.push(AuthFlow::new(vec![stage]));
        }
        if flows.is_empty() {
            // Nothing can succeed, but clients still get a well-formed challenge.
            flows.push(AuthFlow::new(vec![AuthType::Password]));
        }
        Ok(flows)
    }

    /// UIA for an operation on an existing account, with the flows that account can do.
    pub async fn reauthenticate(
        &self,
        operation: UiaOperation,
        user_id: &UserId,
        auth: Option<&AuthData>,
    ) -> Result<()> {
        self.reauthenticate_for(operation, "", user_id, auth).await
    }

    /// [`Services::reauthenticate`] for an operation on one thing (`scope`: a device id).
    pub async fn reauthenticate_for(
        &self,
        operation: UiaOperation,
        scope: &str,
        user_id: &UserId,
        auth: Option<&AuthData>,
    ) -> Result<()> {
        let flows = self.account_flows(user_id).await?;
        self.user_interactive_auth(operation, scope, Some(user_id), flows, auth)
            .await
            .map(drop)
    }

    /// Where the user approves a cross-signing reset (the account page, MSC4312).
    pub fn cross_signing_reset_url(&self) -> String {
        format!(
            "{}{}/account?action=org.matrix.cross_signing_reset",
            self.config.public_baseurl().trim_end_matches('/'),
            crate::api::oauth::PREFIX
        )
    }

    /// The flows registration offers; `None` when registration is closed.
    pub fn registration_flows(&self) -> Option<Vec<AuthFlow>> {
        let registration = &self.config.registration;
        if registration.tokens_required {
            Some(vec![AuthFlow::new(vec![AuthType::RegistrationToken])])
        } else if registration.open {
            Some(vec![AuthFlow::new(vec![AuthType::Dummy])])
        } else {
            None
        }
    }

    /// Runs one UIA step: `Ok` once some flow is complete, else 401 with what remains.
    ///
    /// `user` is the account the operation acts on (`None` for registration); password
    /// stages must prove that very account.
    ///
    /// `scope` names what exactly the operation acts on (the device to delete): a session
    /// started for one thing cannot finish another, 403 `M_FORBIDDEN` as on Synapse.
    pub async fn user_interactive_auth(
        &self,
        operation: UiaOperation,
        scope: &str,
        user: Option<&UserId>,
        flows: Vec<AuthFlow>,
        auth: Option<&AuthData>,
    ) -> Result<UiaOutcome> {
        let now = self.now_ms();
        let operation_key = if scope.is_empty() {
            operation.as_str().to_owned()
        } else {
            format!("{}:{scope}", operation.as_str())
        };
        let offered_oauth = flows
            .iter()
            .any(|flow| flow.stages.contains(&AuthType::OAuth));
        let challenge =
            |session: String, completed: Vec<AuthType>, auth_error: Option<StandardErrorBody>| {
                let mut info = UiaaInfo::new(flows.clone());
                info.session = Some(session);
                // Only m.oauth has parameters (where to approve), but clients' schemas
                // (matrix-nio) and SyTest want the object, as Synapse sends it.
                let params = if offered_oauth {
                    serde_json::json!({"m.oauth": {"url": self.cross_signing_reset_url()}})
                } else {
                    serde_json::json!({})
                };
                info.params = serde_json::value::to_raw_value(&params).ok();
                info.completed = completed;
                info.auth_error = auth_error;
                Error::Uia(Box::new(info))
            };
        let open_session = || async {
            let session = secrets::random_alphanumeric(24);
            let expires = self.uia_expiry(now);
            self.store
                .insert_uia_session(&session, &operation_key, user, expires)
                .await?;
            Ok::<_, Error>(session)
        };
        let Some(auth) = auth else {
            return Err(challenge(open_session().await?, Vec::new(), None));
        };
        let session = match auth.session() {
            Some(session) if !secrets::is_token_shaped(session) => {
                return Err(Error::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::Unknown,
                    "Unknown or expired UIA session",
                ));
            }
            Some(session) => {
                let row = self
                    .store
                    .uia_session(session)
                    .await?
                    .filter(|row| row.expires_ms > now);
                let Some(row) = row else {
                    return Err(Error::new(
                        StatusCode::BAD_REQUEST,
                        ErrorKind::Unknown,
                        "Unknown or expired UIA session",
                    ));
                };
                if row.operation != operation_key || row.user_id.as_deref() != user {
                    return Err(Error::forbidden(
                        "This authentication session was started for another operation",
                    ));
                }
                (session.to_owned(), row.completed)
            }
            None => (open_session().await?, Vec::new()),
        };
        let (session, mut completed) = session;
        let offered = |stage: &AuthType| flows.iter().any(|flow| flow.stages.contains(stage));
        let as_types = |completed: &[String]| {
            completed
                .iter()
                .map(|s| AuthType::from(s.as_str()))
                .collect::<Vec<_>>()
        };

        let mut outcome = UiaOutcome::default();
        let stage_result: Result<Option<AuthType>, StandardErrorBody> = match auth {
            // The fallback page completed a stage already; the client only says "done".
            AuthData::FallbackAcknowledgement(_) => Ok(None),
            sso if sso.auth_type() == Some(AuthType::Sso) && offered(&AuthType::Sso) => Ok(None),
            AuthData::Password(p) if offered(&AuthType::Password) => match (user, &p.identifier) {
                (Some(user), UserIdentifier::Matrix(id)) => {
                    let claimed = self.local_user_id(&id.user).ok();
                    if claimed.as_deref() != Some(user) {
                        // Someone else's credentials (a stolen token's holder, say): refused
                        // outright, as Synapse, without looking at that other password.
                        return Err(Error::forbidden("You can only authenticate as yourself"));
                    } else {
                        match self.check_password(user, &p.password).await {
                            Ok(()) => Ok(Some(AuthType::Password)),
                            Err(Error::Matrix { .. }) => Err(StandardErrorBody::new(
                                ErrorKind::Forbidden,
                                "Invalid password".to_owned(),
                            )),
                            Err(other) => return Err(other),
                        }
                    }
                }
                _ => Err(StandardErrorBody::new(
                    ErrorKind::InvalidParam,
                    "Identify the user with m.id.user".to_owned(),
                )),
            },
            AuthData::Dummy(_) if offered(&AuthType::Dummy) => Ok(Some(AuthType::Dummy)),
            // Approved on the account page: the operation checks (and takes) the approval
            // itself before it asks for UIA, so here it is only ever still missing.
            oauth if oauth.auth_type() == Some(AuthType::OAuth) && offered(&AuthType::OAuth) => {
                match user {
                    Some(user)
                        if self
                            .store
                            .cross_signing_reset_allowed(user.as_str(), now)
                            .await? =>
                    {
                        Ok(Some(AuthType::OAuth))
                    }
                    _ => Err(StandardErrorBody::new(
                        ErrorKind::Forbidden,
                        "Not approved yet: open the link to approve the reset".to_owned(),
                    )),
                }
            }
            AuthData::RegistrationToken(t) if offered(&AuthType::RegistrationToken) => {
                match self.store.registration_token(&t.token).await? {
                    Some(row) if row.usable(now) => {
                        outcome.registration_token = Some(row.token);
                        Ok(Some(AuthType::RegistrationToken))
                    }
                    _ => Err(StandardErrorBody::new(
                        ErrorKind::Forbidden,
                        "Invalid registration token".to_owned(),
                    )),
                }
            }
            siwe if siwe
                .auth_type()
                .is_some_and(|t| t.as_str() == SIWE_LOGIN_TYPE)
                && offered(&AuthType::from(SIWE_LOGIN_TYPE)) =>
            {
                let data = siwe.data();
                let field = |name: &str| {
                    data.get(name)
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_owned)
                };
                match (user, field("message"), field("signature")) {
                    (Some(user), Some(message), Some(signature)) => {
                        match self.siwe_prove(user, &message, &signature).await {
                            Ok(()) => Ok(Some(AuthType::from(SIWE_LOGIN_TYPE))),
                            Err(Error::Matrix {
                                kind: ErrorKind::Forbidden,
                                message,
                                ..
                            }) => Err(StandardErrorBody::new(ErrorKind::Forbidden, message)),
                            Err(other) => return Err(other),
                        }
                    }
                    _ => Err(StandardErrorBody::new(
                        ErrorKind::BadJson,
                        format!("{SIWE_LOGIN_TYPE} needs `message` and `signature`"),
                    )),
                }
            }
            other => Err(StandardErrorBody::new(
                ErrorKind::Unrecognized,
                format!(
                    "Authentication stage {} is not offered here",
                    other.auth_type().map_or("?".to_owned(), |t| t.to_string())
                ),
            )),
        };
        match stage_result {
            Ok(Some(stage)) => {
                let stage = stage.to_string();
                if !completed.contains(&stage) {
                    completed.push(stage);
                }
            }
            Ok(None) => {
                // Nothing new here; writing back what was read could undo a stage the
                // fallback page completed meanwhile.
                let done = flows.iter().any(|flow| {
                    flow.stages
                        .iter()
                        .all(|s| completed.contains(&s.to_string()))
                });
                if !done {
                    return Err(challenge(session, as_types(&completed), None));
                }
            }
            Err(error) => return Err(challenge(session, as_types(&completed), Some(error))),
        }
        let done = flows.iter().any(|flow| {
            flow.stages
                .iter()
                .all(|s| completed.contains(&s.to_string()))
        });
        if done {
            self.store.delete_uia_session(&session, now).await?;
            Ok(outcome)
        } else {
            self.store.set_uia_completed(&session, &completed).await?;
            Err(challenge(session, as_types(&completed), None))
        }
    }
}
