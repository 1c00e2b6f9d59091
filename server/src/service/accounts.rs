//! Accounts: names, passwords, creation and deactivation.

use http::StatusCode;
use ruma::{OwnedUserId, UserId, api::error::ErrorKind};

use super::{Services, rooms::MembershipChange, secrets};
use crate::{
    http::error::{Error, Result},
    store::{AccountKind, CreateAccount},
};

/// Longest password accepted (as Synapse): argon2 of megabytes would be a cheap DoS.
const MAX_PASSWORD_BYTES: usize = 512;

/// Why `0x…` names are refused to password registration.
pub const WALLET_LOCALPART_HINT: &str =
    "User IDs of the form 0x<40 hex digits> are reserved for Ethereum wallet accounts";

/// Localparts of users the server itself acts as (each room's roles bot): nobody registers them.
const RESERVED_PREFIX: &str = "_matrixon";

fn is_wallet_localpart(localpart: &str) -> bool {
    localpart.len() == 42
        && localpart.starts_with("0x")
        && localpart[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl Services {
    /// The local user ID for `localpart`, if it is a valid new user name.
    pub fn new_user_id(&self, localpart: &str) -> Result<OwnedUserId> {
        let invalid =
            |why: &str| Error::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidUsername, why);
        if localpart.is_empty() {
            return Err(invalid("User name must not be empty"));
        }
        if !localpart.bytes().all(
            |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'),
        ) {
            return Err(invalid(
                "User names may only contain a-z, 0-9, and . _ = - / +",
            ));
        }
        let user_id = UserId::parse(format!("@{localpart}:{}", self.config.server_name))
            .map_err(|_| invalid("User ID is too long"))?;
        if user_id.as_str().len() > 255 {
            return Err(invalid("User ID is too long"));
        }
        Ok(user_id)
    }

    /// The ID `localpart` would get, if it may be registered now: valid, not reserved, not taken.
    pub async fn check_username(&self, localpart: &str) -> Result<OwnedUserId> {
        let user_id = self.new_user_id(localpart)?;
        if is_wallet_localpart(localpart) {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::Exclusive,
                WALLET_LOCALPART_HINT,
            ));
        }
        if localpart.starts_with(RESERVED_PREFIX) {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::Exclusive,
                format!("User names starting with {RESERVED_PREFIX} are the server's own"),
            ));
        }
        if !self.store.user_id_free(&user_id).await? {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::UserInUse,
                "This user name is already taken",
            ));
        }
        Ok(user_id)
    }

    /// Refuses passwords the server will not hash.
    pub fn check_password_shape(password: &str) -> Result<()> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(Error::invalid_param(format!(
                "Passwords are limited to {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        Ok(())
    }

    /// A guest account, named by a random number as on Synapse.
    pub async fn create_guest(&self) -> Result<OwnedUserId> {
        for _ in 0..5 {
            let localpart = format!("{}", rand::random::<u64>() % 10_000_000_000);
            let user_id = self.new_user_id(&localpart)?;
            let created = self
                .store
                .create_account(&user_id, None, AccountKind::Guest, None, self.now_ms())
                .await?;
            if created == CreateAccount::Created {
                tracing::info!(%user_id, "guest account created");
                return Ok(user_id);
            }
        }
        Err(Error::Internal(anyhow::anyhow!(
            "no free guest user id after five tries"
        )))
    }

    /// Whether `user_id` is a guest's account.
    pub async fn is_guest(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.store.is_guest(user_id.as_str()).await?)
    }

    /// Creates a local account (`registration_token` is consumed in the same transaction).
    pub async fn create_account(
        &self,
        localpart: &str,
        password: Option<String>,
        is_admin: bool,
        registration_token: Option<&str>,
    ) -> Result<OwnedUserId> {
        self.check_username(localpart).await?;
        let hash = match password {
            Some(password) => {
                Self::check_password_shape(&password)?;
                Some(secrets::hash_password(password).await?)
            }
            None => None,
        };
        self.create_account_hashed(localpart, hash, is_admin, registration_token)
            .await
    }

    /// [`Services::create_account`] with the password already hashed (a registration hashes
    /// it when it first arrives).
    pub async fn create_account_hashed(
        &self,
        localpart: &str,
        hash: Option<String>,
        is_admin: bool,
        registration_token: Option<&str>,
    ) -> Result<OwnedUserId> {
        let user_id = self.check_username(localpart).await?;
        match self
            .store
            .create_account(
                &user_id,
                hash.as_deref(),
                if is_admin {
                    AccountKind::Admin
                } else {
                    AccountKind::User
                },
                registration_token,
                self.now_ms(),
            )
            .await?
        {
            CreateAccount::Created => {
                tracing::info!(%user_id, is_admin, "account created");
                Ok(user_id)
            }
            outcome => Err(registration_refused(outcome)),
        }
    }

    /// The guest account a registration with `guest_access_token` would upgrade: 403 for a
    /// token that is not a guest's, 400 `M_USER_IN_USE` when `username` names anyone else
    /// (a guest upgrades only itself), as on Synapse.
    pub async fn guest_to_upgrade(
        &self,
        guest_token: &str,
        username: Option<&str>,
    ) -> Result<OwnedUserId> {
        let session = self.authenticate(guest_token, None).await?;
        if !session.is_guest {
            return Err(Error::forbidden(
                "guest_access_token must be a guest's access token",
            ));
        }
        if username.is_some_and(|name| name != session.user_id.localpart()) {
            return Err(registration_refused(CreateAccount::Taken));
        }
        Ok(session.user_id)
    }

    /// Makes a guest account a full account with a password (its hash): the user id stays,
    /// so rooms, keys and settings carry over.
    pub async fn upgrade_guest(
        &self,
        user_id: OwnedUserId,
        hash: Option<String>,
        registration_token: Option<&str>,
    ) -> Result<OwnedUserId> {
        match self
            .store
            .upgrade_guest(&user_id, hash.as_deref(), registration_token, self.now_ms())
            .await?
        {
            CreateAccount::Created => {
                tracing::info!(%user_id, "guest account upgraded");
                Ok(user_id)
            }
            outcome => Err(registration_refused(outcome)),
        }
    }

    /// Resolves what a client typed (`alice` or `@alice:server`) to a local user ID.
    pub fn local_user_id(&self, user: &str) -> Result<OwnedUserId> {
        let user_id = if user.starts_with('@') {
            UserId::parse(user).map_err(|_| Error::invalid_param("Malformed user ID"))?
        } else {
            UserId::parse(format!(
                "@{}:{}",
                user.to_lowercase(),
                self.config.server_name
            ))
            .map_err(|_| Error::invalid_param("Malformed user name"))?
        };
        if user_id.server_name() != self.config.server_name {
            return Err(Error::forbidden("This server only knows its own users"));
        }
        Ok(user_id)
    }

    /// Creates a registration token (random when `token` is `None`) and returns it.
    pub async fn create_registration_token(
        &self,
        token: Option<String>,
        uses: Option<u32>,
        expires_in_s: Option<u64>,
    ) -> Result<String> {
        let token = token.unwrap_or_else(|| secrets::random_alphanumeric(16));
        if token.is_empty()
            || token.len() > 64
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
        {
            return Err(Error::invalid_param(
                "Tokens are 1 to 64 characters of A-Z, a-z, 0-9, . _ ~ -",
            ));
        }
        let now = self.now_ms();
        let expires = expires_in_s
            .map(|s| now.saturating_add(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)));
        self.store
            .insert_registration_token(&token, uses.map(i64::from), expires, now)
            .await
            .map_err(|e| {
                if crate::store::is_unique_violation(&e) {
                    Error::invalid_param("This registration token already exists")
                } else {
                    e.into()
                }
            })?;
        Ok(token)
    }

    /// 403 unless `user_id` is an existing, active account.
    pub async fn ensure_active(&self, user_id: &UserId) -> Result<()> {
        match self.store.user(user_id).await? {
            Some(user) if !user.deactivated => Ok(()),
            Some(_) => Err(Error::new(
                StatusCode::FORBIDDEN,
                ErrorKind::UserDeactivated,
                "This account has been deactivated",
            )),
            None => Err(Error::forbidden("Unknown user")),
        }
    }

    /// Checks a password; the same 403 for an unknown user and a wrong password.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let wrong = || Error::forbidden("Invalid username or password");
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(wrong());
        }
        let Some(user) = self.store.user(user_id).await? else {
            // Spend the same argon2 time as for a real account, so timing does not tell
            // which user names exist.
            secrets::verify_password(
                password.to_owned(),
                secrets::dummy_password_hash().to_owned(),
            )
            .await?;
            return Err(wrong());
        };
        if user.deactivated {
            return Err(Error::new(
                StatusCode::FORBIDDEN,
                ErrorKind::UserDeactivated,
                "This account has been deactivated",
            ));
        }
        let Some(hash) = user.password_hash else {
            return Err(wrong());
        };
        if secrets::verify_password(password.to_owned(), hash).await? {
            Ok(())
        } else {
            Err(wrong())
        }
    }

    /// Sets a new password; with `logout_devices`, every other device is logged out.
    pub async fn change_password(
        &self,
        session: &super::Session,
        new_password: String,
        logout_devices: bool,
    ) -> Result<()> {
        Self::check_password_shape(&new_password)?;
        let hash = secrets::hash_password(new_password).await?;
        self.store
            .set_password_hash(&session.user_id, Some(&hash))
            .await?;
        if logout_devices {
            self.store
                .delete_other_devices(&session.user_id, Some(&session.device_id))
                .await?;
            self.wake_device_watchers(&session.user_id).await?;
        }
        Ok(())
    }

    /// Deactivates an account for good: no password, devices, tokens, pushers or wallets,
    /// no addresses bound on identity servers (whether every one was unbound is returned),
    /// its events erased from the view of later members when `erase`, and out of every room (invites rejected, knocks withdrawn), as Synapse does.
    pub async fn deactivate(&self, user_id: &UserId, erase: bool) -> Result<bool> {
        let wallets = self.store.wallets(user_id).await?;
        self.store.deactivate_user(user_id).await?;
        if erase {
            self.store
                .erase_user(user_id.as_str(), self.now_ms())
                .await?;
        }
        self.wake_device_watchers(user_id).await?;
        // Its addresses no longer lead anyone to it.
        let unbound = self.identity_unbind_all(user_id).await?;
        // Its verdicts go; no re-check is needed, the account leaves every room below.
        for (address, _) in &wallets {
            if let Ok(address) = address.parse() {
                self.gate_cache.invalidate(address, self.now_ms()).await;
            }
        }
        for (room, membership, _) in self.store.user_rooms(user_id.as_str()).await? {
            if !matches!(membership.as_str(), "join" | "invite" | "knock") {
                continue;
            }
            let Ok(room_id) = ruma::RoomId::parse(&room) else {
                continue;
            };
            // One room refusing (its rules changed under us) must not keep the others.
            if let Err(e) = self
                .change_membership(&room_id, user_id, user_id, MembershipChange::Leave, None)
                .await
            {
                tracing::warn!(%user_id, %room_id, error = %e, "a deactivated account could not leave a room");
            }
        }
        tracing::info!(%user_id, erase, "account deactivated");
        Ok(unbound)
    }
}

/// The error for an account that could not be created or upgraded.
fn registration_refused(outcome: CreateAccount) -> Error {
    match outcome {
        CreateAccount::TokenUnusable => Error::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden,
            "The registration token is not valid (unknown, used up or expired)",
        ),
        _ => Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::UserInUse,
            "This user name is already taken",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::is_wallet_localpart;

    #[test]
    fn wallet_localparts_are_recognised() {
        assert!(is_wallet_localpart(
            "0x51a1449b3b6d635eddec781cd47a99221712de97"
        ));
        assert!(!is_wallet_localpart("0x51a1"));
        assert!(!is_wallet_localpart("alice"));
    }
}
