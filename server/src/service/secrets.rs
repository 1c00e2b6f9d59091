//! Random secrets, their hashes, and password hashing.

use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};

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

type Job = Box<dyn FnOnce() + Send>;

/// Password hashing runs on a few dedicated threads, one per core. Each argon2 hash needs
/// 19 MiB: on threads of their own those buffers are reused, where the blocking pool's many
/// threads would each keep one (hundreds of MiB of memory after a burst of logins), and
/// a burst of logins queues instead of taking every core.
fn hashing_threads() -> Option<&'static Mutex<mpsc::Sender<Job>>> {
    static POOL: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let mut started = 0;
        for i in 0..threads {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    loop {
                        let job = receiver
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(error) => tracing::warn!(%error, "could not start a password-hashing thread"),
            }
        }
        (started > 0).then(|| Mutex::new(sender))
    })
    .as_ref()
}

/// Runs `work` on a hashing thread (or the blocking pool if none could start).
async fn on_hashing_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let Some(pool) = hashing_threads() else {
        return Ok(tokio::task::spawn_blocking(work).await?);
    };
    let (done, result) = tokio::sync::oneshot::channel();
    pool.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send(Box::new(move || {
            let _ = done.send(work());
        }))
        .map_err(|_| anyhow::anyhow!("the password-hashing threads are gone"))?;
    Ok(result.await?)
}

/// argon2id PHC string for a password, computed off the async runtime.
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    on_hashing_thread(move || {
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
    on_hashing_thread(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
}
