//! Server signing keys: this server's key document, and other servers' keys fetched from
//! them (or from a notary), checked against their own signatures and cached.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::Duration,
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, ServerName,
    serde::Base64,
    signatures::{self, PublicKeyMap, PublicKeySet},
};

use super::FederationError;
use crate::{service::Services, store::RemoteKey};

/// How long this server's key document says it may be cached.
const OWN_VALIDITY_MS: i64 = 7 * 24 * 3600 * 1000;
/// Longest validity taken from another server (the spec's cap for event checks).
const MAX_VALIDITY_MS: i64 = 7 * 24 * 3600 * 1000;
/// How soon a server whose keys could not be fetched is asked again.
const REFETCH_AFTER: Duration = Duration::from_secs(60);
/// Largest key document read.
const KEY_DOCUMENT_BYTES: usize = 256 * 1024;
/// Most servers whose last fetch attempt is remembered.
const ATTEMPTS_KEPT: usize = 10_000;

/// Fetched key documents (for answering as a notary) and when fetches were last tried.
#[derive(Default)]
pub struct KeyCache {
    documents: Mutex<HashMap<String, (CanonicalJsonObject, i64)>>,
    attempts: Mutex<HashMap<String, std::time::Instant>>,
    /// One fetch per server at a time: others wait for it rather than find nothing.
    fetching: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyCache {
    /// The lock held while `server`'s keys are fetched.
    fn fetch_lock(&self, server: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let Ok(mut fetching) = self.fetching.lock() else {
            return std::sync::Arc::default();
        };
        if fetching.len() >= ATTEMPTS_KEPT {
            fetching.retain(|_, lock| std::sync::Arc::strong_count(lock) > 1);
        }
        fetching.entry(server.to_owned()).or_default().clone()
    }

    /// Whether `server`'s keys may be fetched now (not tried within [`REFETCH_AFTER`]).
    fn may_fetch(&self, server: &str) -> bool {
        let Ok(mut attempts) = self.attempts.lock() else {
            return true;
        };
        let now = std::time::Instant::now();
        if attempts
            .get(server)
            .is_some_and(|at| now.duration_since(*at) < REFETCH_AFTER)
        {
            return false;
        }
        if attempts.len() >= ATTEMPTS_KEPT {
            attempts.retain(|_, at| now.duration_since(*at) < REFETCH_AFTER);
        }
        attempts.insert(server.to_owned(), now);
        true
    }
}

/// The keys a document holds, after checking it is `server`'s and signed by its own key.
fn checked_document(
    server: &ServerName,
    document: &CanonicalJsonObject,
    now_ms: i64,
) -> Result<Vec<RemoteKey>, String> {
    let string = |value: Option<&CanonicalJsonValue>| match value {
        Some(CanonicalJsonValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let object = |value: Option<&CanonicalJsonValue>| match value {
        Some(CanonicalJsonValue::Object(o)) => Some(o.clone()),
        _ => None,
    };
    if string(document.get("server_name")).as_deref() != Some(server.as_str()) {
        return Err(format!("the key document is not {server}'s"));
    }
    let valid_until = match document.get("valid_until_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => i64::from(*ts),
        _ => return Err("the key document has no valid_until_ts".to_owned()),
    };
    let mut keys = Vec::new();
    let mut own = PublicKeySet::new();
    for (key_id, key) in object(document.get("verify_keys")).unwrap_or_default() {
        let Some(public_key) = string(object(Some(&key)).as_ref().and_then(|k| k.get("key")))
        else {
            continue;
        };
        let Ok(decoded) = Base64::parse(&public_key) else {
            continue;
        };
        own.insert(key_id.clone(), decoded);
        keys.push(RemoteKey {
            key_id,
            public_key,
            valid_until_ts: valid_until.min(now_ms.saturating_add(MAX_VALIDITY_MS)),
            expired_ts: None,
        });
    }
    if keys.is_empty() {
        return Err("the key document has no verify_keys".to_owned());
    }
    // Its own signature only (a notary adds one of its own).
    let mut signed = document.clone();
    let own_signatures = object(document.get("signatures"))
        .and_then(|all| object(all.get(server.as_str())))
        .ok_or("the key document is not signed by its server")?;
    signed.insert(
        "signatures".to_owned(),
        CanonicalJsonValue::Object(BTreeMap::from([(
            server.to_string(),
            CanonicalJsonValue::Object(own_signatures),
        )])),
    );
    let map = PublicKeyMap::from([(server.to_string(), own)]);
    signatures::verify_json(&map, &signed)
        .map_err(|e| format!("the key document's signature does not verify: {e}"))?;
    for (key_id, key) in object(document.get("old_verify_keys")).unwrap_or_default() {
        let key = object(Some(&key)).unwrap_or_default();
        let (Some(public_key), Some(CanonicalJsonValue::Integer(expired))) =
            (string(key.get("key")), key.get("expired_ts"))
        else {
            continue;
        };
        if Base64::<ruma::serde::base64::Standard>::parse(&public_key).is_err() {
            continue;
        }
        keys.push(RemoteKey {
            key_id,
            public_key,
            valid_until_ts: i64::from(*expired),
            expired_ts: Some(i64::from(*expired)),
        });
    }
    Ok(keys)
}

impl Services {
    /// This server's key document, signed (`GET /_matrix/key/v2/server`).
    pub fn own_key_document(&self) -> Result<CanonicalJsonObject, FederationError> {
        let key_id = format!("ed25519:{}", self.signing_key.version());
        let public =
            Base64::<ruma::serde::base64::Standard>::new(self.signing_key.public_key().to_vec())
                .encode();
        let mut document: CanonicalJsonObject = serde_json::from_value(serde_json::json!({
            "server_name": self.config.server_name.as_str(),
            "verify_keys": { key_id: { "key": public } },
            "old_verify_keys": {},
            "valid_until_ts": self.now_ms().saturating_add(OWN_VALIDITY_MS),
        }))
        .map_err(|e| FederationError::Internal(e.to_string()))?;
        signatures::sign_json(
            self.config.server_name.as_str(),
            &self.signing_key,
            &mut document,
        )
        .map_err(|e| FederationError::Internal(e.to_string()))?;
        Ok(document)
    }

    /// Adds this server's signature to a key document it serves as a notary.
    pub fn notarise(&self, document: &mut CanonicalJsonObject) -> Result<(), FederationError> {
        signatures::sign_json(
            self.config.server_name.as_str(),
            &self.signing_key,
            document,
        )
        .map_err(|e| FederationError::Internal(e.to_string()))
    }

    /// The public keys of `server` among `key_ids` that verify something signed at `at_ms`,
    /// fetching the server's keys when one is unknown or no longer valid then.
    pub async fn server_keys_for(
        &self,
        server: &ServerName,
        key_ids: &[&str],
        at_ms: i64,
    ) -> Result<PublicKeySet, FederationError> {
        if server == self.config.server_name {
            let own = format!("ed25519:{}", self.signing_key.version());
            let public = Base64::new(self.signing_key.public_key().to_vec());
            return Ok(PublicKeySet::from([(own, public)]));
        }
        let usable = |keys: &[RemoteKey]| {
            keys.iter()
                .filter(|k| key_ids.contains(&k.key_id.as_str()) && k.valid_until_ts >= at_ms)
                .filter_map(|k| Some((k.key_id.clone(), Base64::parse(&k.public_key).ok()?)))
                .collect::<PublicKeySet>()
        };
        let known = self.store.remote_server_keys(server.as_str()).await?;
        let found = usable(&known);
        if !found.is_empty() {
            return Ok(found);
        }
        // A fetch already under way (another request, another event) is waited for.
        let lock = self.federation.keys.fetch_lock(server.as_str());
        let _fetching = lock.lock().await;
        let found = usable(&self.store.remote_server_keys(server.as_str()).await?);
        if !found.is_empty() {
            return Ok(found);
        }
        let mut why = "it was asked less than a minute ago".to_owned();
        if self.federation.keys.may_fetch(server.as_str()) {
            match self.fetch_server_keys(server).await {
                Ok(()) => why = "it does not list them".to_owned(),
                Err(error) => {
                    tracing::info!(%server, %error, "could not fetch server keys");
                    why = error.to_string();
                }
            }
            let found = usable(&self.store.remote_server_keys(server.as_str()).await?);
            if !found.is_empty() {
                return Ok(found);
            }
        }
        Err(FederationError::Unauthorized(format!(
            "no valid key {key_ids:?} of {server} is known ({why})"
        )))
    }

    /// Fetches `server`'s keys from it, then from the configured notaries, and stores them.
    async fn fetch_server_keys(&self, server: &ServerName) -> Result<(), FederationError> {
        let direct = self.fetch_keys_directly(server).await;
        let error = match direct {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        for notary in &self.config.federation.trusted_key_servers {
            if notary.as_str() == server.as_str() || *notary == self.config.server_name {
                continue;
            }
            match self.fetch_keys_from_notary(server, notary).await {
                Ok(()) => return Ok(()),
                Err(e) => tracing::info!(%server, %notary, error = %e, "notary gave no keys"),
            }
        }
        Err(error)
    }

    async fn fetch_keys_directly(&self, server: &ServerName) -> Result<(), FederationError> {
        let request = http::Request::get("/_matrix/key/v2/server")
            .body(Vec::new())
            .map_err(|e| FederationError::Internal(e.to_string()))?;
        let body = self
            .federation_raw(server, request, false, KEY_DOCUMENT_BYTES)
            .await?;
        let document: CanonicalJsonObject = serde_json::from_slice(&body)
            .map_err(|e| FederationError::BadResponse(format!("{server}'s keys: {e}")))?;
        self.keep_key_document(server, document).await
    }

    async fn fetch_keys_from_notary(
        &self,
        server: &ServerName,
        notary: &ServerName,
    ) -> Result<(), FederationError> {
        let body =
            serde_json::to_vec(&serde_json::json!({ "server_keys": { server.as_str(): {} } }))
                .map_err(|e| FederationError::Internal(e.to_string()))?;
        let request = http::Request::post("/_matrix/key/v2/query")
            .body(body)
            .map_err(|e| FederationError::Internal(e.to_string()))?;
        let answer = self
            .federation_raw(notary, request, false, KEY_DOCUMENT_BYTES * 4)
            .await?;
        #[derive(serde::Deserialize)]
        struct Answer {
            server_keys: Vec<CanonicalJsonObject>,
        }
        let answer: Answer = serde_json::from_slice(&answer)
            .map_err(|e| FederationError::BadResponse(format!("{notary}'s key query: {e}")))?;
        for document in answer.server_keys {
            // The notary must vouch for the document with a key of its own.
            let notary_signed = match document.get("signatures") {
                Some(CanonicalJsonValue::Object(all)) => all.get(notary.as_str()).cloned(),
                _ => None,
            };
            let Some(CanonicalJsonValue::Object(notary_signatures)) = notary_signed else {
                continue;
            };
            let key_ids: Vec<&str> = notary_signatures.keys().map(String::as_str).collect();
            let keys = Box::pin(self.server_keys_for(notary, &key_ids, self.now_ms())).await?;
            let mut vouched = document.clone();
            vouched.insert(
                "signatures".to_owned(),
                CanonicalJsonValue::Object(BTreeMap::from([(
                    notary.to_string(),
                    CanonicalJsonValue::Object(notary_signatures),
                )])),
            );
            let map = PublicKeyMap::from([(notary.to_string(), keys)]);
            if signatures::verify_json(&map, &vouched).is_err() {
                continue;
            }
            self.keep_key_document(server, document).await?;
            return Ok(());
        }
        Err(FederationError::BadResponse(format!(
            "{notary} vouched for no key document of {server}"
        )))
    }

    /// Checks a key document and stores its keys.
    async fn keep_key_document(
        &self,
        server: &ServerName,
        document: CanonicalJsonObject,
    ) -> Result<(), FederationError> {
        let now = self.now_ms();
        let keys =
            checked_document(server, &document, now).map_err(FederationError::BadResponse)?;
        self.store
            .store_remote_server_keys(server.as_str(), &keys, now)
            .await?;
        let valid_until = keys.iter().map(|k| k.valid_until_ts).max().unwrap_or(now);
        if let Ok(mut documents) = self.federation.keys.documents.lock() {
            if documents.len() >= ATTEMPTS_KEPT {
                documents.retain(|_, (_, until)| *until > now);
            }
            let mut unsigned = document;
            if let Some(CanonicalJsonValue::Object(signatures)) = unsigned.get_mut("signatures") {
                signatures.retain(|name, _| name == server.as_str());
            }
            documents.insert(server.to_string(), (unsigned, valid_until));
        }
        Ok(())
    }

    /// Key documents of `server` for a notary answer (`POST /_matrix/key/v2/query`): this
    /// server's own, or another's as fetched (fetched now when unknown or not valid until
    /// `minimum_valid_until`), each signed by this server too.
    pub async fn notary_documents(
        &self,
        server: &ServerName,
        minimum_valid_until: i64,
    ) -> Vec<CanonicalJsonObject> {
        if server == self.config.server_name {
            return self.own_key_document().into_iter().collect();
        }
        let cached = |services: &Self| {
            services
                .federation
                .keys
                .documents
                .lock()
                .ok()
                .and_then(|documents| documents.get(server.as_str()).cloned())
                .filter(|(_, until)| *until >= minimum_valid_until)
                .map(|(document, _)| document)
        };
        let mut document = cached(self);
        if document.is_none() && self.federation.keys.may_fetch(server.as_str()) {
            if let Err(error) = self.fetch_keys_directly(server).await {
                tracing::info!(%server, %error, "notary: could not fetch keys");
            }
            document = cached(self);
        }
        let Some(mut document) = document else {
            return Vec::new();
        };
        match self.notarise(&mut document) {
            Ok(()) => vec![document],
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_document(name: &str, key: &ruma::signatures::Ed25519KeyPair) -> CanonicalJsonObject {
        let public =
            Base64::<ruma::serde::base64::Standard>::new(key.public_key().to_vec()).encode();
        let mut document: CanonicalJsonObject = serde_json::from_value(serde_json::json!({
            "server_name": name,
            "verify_keys": { format!("ed25519:{}", key.version()): { "key": public } },
            "old_verify_keys": {},
            "valid_until_ts": 2_000_000_000_000_i64,
        }))
        .expect("document");
        signatures::sign_json(name, key, &mut document).expect("signing");
        document
    }

    fn key_pair(version: &str) -> ruma::signatures::Ed25519KeyPair {
        let der = ruma::signatures::Ed25519KeyPair::generate();
        ruma::signatures::Ed25519KeyPair::from_der(&der, version.to_owned()).expect("key pair")
    }

    #[test]
    fn documents_must_be_the_servers_own_and_self_signed() {
        let server = ServerName::parse("remote.example").expect("name");
        let key = key_pair("k1");
        let document = signed_document("remote.example", &key);
        let keys = checked_document(&server, &document, 1_000).expect("a good document");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].key_id, "ed25519:k1");
        // Capped at seven days after now.
        assert_eq!(keys[0].valid_until_ts, 1_000 + MAX_VALIDITY_MS);

        let other = ServerName::parse("other.example").expect("name");
        assert!(checked_document(&other, &document, 1_000).is_err());

        let mut tampered = document.clone();
        tampered.insert(
            "valid_until_ts".to_owned(),
            CanonicalJsonValue::Integer(9_i32.into()),
        );
        assert!(checked_document(&server, &tampered, 1_000).is_err());

        // Signed by a key that is not in the document.
        let impostor = key_pair("k2");
        let mut forged = signed_document("remote.example", &key);
        forged.remove("signatures");
        signatures::sign_json("remote.example", &impostor, &mut forged).expect("signing");
        assert!(checked_document(&server, &forged, 1_000).is_err());
    }
}
