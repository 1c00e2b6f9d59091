//! Random secrets, their hashes, and password hashing.

use std::sync::OnceLock;

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use rand::{Rng, distributions::Alphanumeric};
use ruma::OwnedDeviceId;
use sha2::{Digest, Sha256};

/// A random string of ASCII letters and digits from the operating system's CSPRNG.
pub fn random_alphanumeric(len: usize) -> String {
    OsRng
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A bearer secret with a recognisable prefix (so leaked tokens can be found by scanners).
pub fn new_token(prefix: &str) -> String {
    format!("{prefix}_{}", random_alphanumeric(40))
}

/// Whether `value` could be a session id or nonce this server made (letters and digits, at
/// most 64): anything else is refused before it reaches the database.
pub fn is_token_shaped(value: &str) -> bool {
    !value.is_empty() && value.len() <= 64 && value.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The form in which a bearer secret is stored and looked up.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new device ID: ten upper-case letters, as Synapse makes them.
pub fn new_device_id() -> OwnedDeviceId {
    let id: String = (0..10)
        .map(|_| char::from(OsRng.gen_range(b'A'..=b'Z')))
        .collect();
    id.into()
}

/// argon2id PHC string for a password, computed off the async runtime.
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
    })
    .await?
}

/// A valid argon2id hash of nothing anyone knows, for checks against accounts that do not exist.
pub fn dummy_password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(random_alphanumeric(32).as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .unwrap_or_default()
    })
}

/// True when `password` matches the stored PHC string; a malformed hash never matches.
pub async fn verify_password(password: String, hash: String) -> anyhow::Result<bool> {
    Ok(tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await?)
}
