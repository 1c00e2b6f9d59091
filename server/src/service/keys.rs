//! End-to-end encryption keys: what devices publish, what others query and claim, and which
//! users' device lists a client must refresh. Keys are stored exactly as signed.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use ruma::{
    OwnedUserId, ServerName, UserId,
    signatures::{
        SigningKeyAlgorithm, to_canonical_json_string_for_signing, verify_canonical_json_bytes,
    },
};
use serde_json::{Map, Value, json};

use super::{Services, UiaOperation};
use crate::{
    http::error::{Error, Result},
    store::KeySignature,
};

/// Most one-time or fallback keys accepted in one upload.
const MAX_KEYS_PER_UPLOAD: usize = 1_000;
/// Most unclaimed one-time keys kept per device.
pub const MAX_ONE_TIME_KEYS: i64 = 10_000;

/// The cross-signing key types, as stored and as named in `usage`.
const CROSS_SIGNING_TYPES: [&str; 3] = ["master", "self_signing", "user_signing"];

/// Keys that may sign a given key: `(ed25519:<id>, unpadded-base64 public key)`.
type Signers = Vec<(String, String)>;

/// A key as uploaded: the JSON object and its exact text.
pub struct UploadedKey {
    /// The key ID (`algorithm:name`).
    pub key_id: String,
    /// The object's JSON text, stored verbatim.
    pub json: String,
}

/// Which users' devices a client must re-fetch, and which it no longer shares a room with.
#[derive(Debug, Default)]
pub struct DeviceListDelta {
    /// Users whose device lists changed or who newly share a room.
    pub changed: BTreeSet<OwnedUserId>,
    /// Users who no longer share any room.
    pub left: BTreeSet<OwnedUserId>,
}

fn object(json: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(json) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Error::bad_json("A key must be a JSON object")),
    }
}

/// The one `ed25519:<key>` public key of a cross-signing key object.
fn cross_signing_public_key(key: &Map<String, Value>) -> Option<String> {
    let keys = key.get("keys")?.as_object()?;
    if keys.len() != 1 {
        return None;
    }
    let (id, value) = keys.iter().next()?;
    let public = id.strip_prefix("ed25519:")?;
    (value.as_str() == Some(public)).then(|| public.to_owned())
}

/// Checks `object`'s signature by `signer`/`key_id` with the unpadded-base64 `public_key`.
fn signature_valid(object: &Map<String, Value>, signer: &str, key_id: &str, public: &str) -> bool {
    let Some(signature) = object
        .get("signatures")
        .and_then(|s| s.get(signer))
        .and_then(|s| s.get(key_id))
        .and_then(Value::as_str)
    else {
        return false;
    };
    let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
    let (Ok(signature), Ok(public)) = (
        engine.decode(signature.trim_end_matches('=')),
        engine.decode(public.trim_end_matches('=')),
    ) else {
        return false;
    };
    let Ok(canonical) =
        serde_json::from_value::<ruma::CanonicalJsonObject>(Value::Object(object.clone()))
    else {
        return false;
    };
    let Ok(text) = to_canonical_json_string_for_signing(&canonical) else {
        return false;
    };
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        &public,
        &signature,
        text.as_bytes(),
    )
    .is_ok()
}

/// The object without `signatures` and `unsigned`, to compare what was signed.
fn signed_part(object: &Map<String, Value>) -> Map<String, Value> {
    let mut object = object.clone();
    object.remove("signatures");
    object.remove("unsigned");
    object
}

/// Adds later signatures to a key object's `signatures`.
fn merge_signatures(object: &mut Map<String, Value>, signatures: &[&KeySignature]) {
    if signatures.is_empty() {
        return;
    }
    let entry = object
        .entry("signatures")
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    if let Value::Object(by_user) = entry {
        for s in signatures {
            let user = by_user
                .entry(s.signer_user_id.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(keys) = user {
                keys.insert(s.signer_key_id.clone(), Value::from(s.signature.as_str()));
            }
        }
    }
}

impl Services {
    /// Wakes the syncs of everyone who shares a room with `user_id`: their device lists
    /// (and the user's own other devices) must see the change; other servers are told.
    pub async fn wake_device_watchers(&self, user_id: &UserId) -> Result<()> {
        let peers = self.room_peers(user_id).await?;
        self.bus.wake(peers.iter().map(|u| &**u));
        // And the other servers in those rooms, for a user of this one.
        self.send_device_list_update(user_id).await
    }

    /// `POST /keys/upload`: stores device keys, one-time and fallback keys; returns the
    /// device's unclaimed one-time key counts.
    pub async fn upload_keys(
        &self,
        user_id: &UserId,
        device_id: &str,
        device_keys: Option<&str>,
        one_time_keys: Vec<UploadedKey>,
        fallback_keys: Vec<UploadedKey>,
    ) -> Result<Vec<(String, i64)>> {
        if one_time_keys.len() > MAX_KEYS_PER_UPLOAD || fallback_keys.len() > MAX_KEYS_PER_UPLOAD {
            return Err(Error::invalid_param(format!(
                "At most {MAX_KEYS_PER_UPLOAD} keys can be uploaded at once"
            )));
        }
        if let Some(json) = device_keys {
            let keys = object(json)?;
            if keys.get("user_id").and_then(Value::as_str) != Some(user_id.as_str())
                || keys.get("device_id").and_then(Value::as_str) != Some(device_id)
            {
                return Err(Error::invalid_param(format!(
                    "device_keys must name this device: user_id {user_id}, device_id {device_id}"
                )));
            }
            if !keys.get("keys").is_some_and(Value::is_object)
                || !keys.get("algorithms").is_some_and(Value::is_array)
            {
                return Err(Error::bad_json("device_keys needs `keys` and `algorithms`"));
            }
        }
        let split = |keys: Vec<UploadedKey>| -> Result<Vec<(String, String, String)>> {
            keys.into_iter()
                .map(|k| {
                    let (algorithm, name) = k.key_id.split_once(':').ok_or_else(|| {
                        Error::invalid_param(format!(
                            "{} is not an algorithm:name key ID",
                            k.key_id
                        ))
                    })?;
                    if algorithm.is_empty() || name.is_empty() {
                        return Err(Error::invalid_param(format!(
                            "{} is not an algorithm:name key ID",
                            k.key_id
                        )));
                    }
                    Ok((algorithm.to_owned(), k.key_id.clone(), k.json))
                })
                .collect()
        };
        let one_time = split(one_time_keys)?;
        let fallback = split(fallback_keys)?;
        if let Some(json) = device_keys
            && !self
                .store
                .set_device_keys(user_id.as_str(), device_id, json)
                .await?
        {
            return Err(Error::not_found("This device no longer exists"));
        }
        if device_keys.is_some() {
            self.wake_device_watchers(user_id).await?;
        }
        if !one_time.is_empty() {
            let stored: i64 = self
                .store
                .one_time_key_counts(user_id.as_str(), device_id)
                .await?
                .iter()
                .map(|(_, n)| n)
                .sum();
            if stored + one_time.len() as i64 > MAX_ONE_TIME_KEYS {
                return Err(Error::invalid_param(format!(
                    "A device can hold at most {MAX_ONE_TIME_KEYS} unclaimed one-time keys"
                )));
            }
            if let Some(key_id) = self
                .store
                .add_one_time_keys(user_id.as_str(), device_id, &one_time)
                .await?
            {
                return Err(Error::invalid_param(format!(
                    "One-time key {key_id} already exists with other content"
                )));
            }
        }
        if !fallback.is_empty() {
            self.store
                .set_fallback_keys(user_id.as_str(), device_id, &fallback)
                .await?;
        }
        if !one_time.is_empty() || !fallback.is_empty() {
            // A waiting sync of this device answers with key counts from before the upload.
            self.bus.wake([user_id]);
        }
        self.one_time_key_counts(user_id, device_id).await
    }

    /// A device's unclaimed one-time keys per algorithm, `signed_curve25519` always named
    /// (0 when none are left): clients top up only what is reported.
    pub async fn one_time_key_counts(
        &self,
        user_id: &UserId,
        device_id: &str,
    ) -> Result<Vec<(String, i64)>> {
        let mut counts = self
            .store
            .one_time_key_counts(user_id.as_str(), device_id)
            .await?;
        if !counts.iter().any(|(a, _)| a == "signed_curve25519") {
            counts.push(("signed_curve25519".to_owned(), 0));
        }
        Ok(counts)
    }

    /// `POST /keys/query` for local users: device keys (with later signatures and display
    /// names) and cross-signing keys; user-signing keys only for the requester's own.
    ///
    /// `requester` is `None` when another server asks (`/user/keys/query`): then only local
    /// users are answered, and never with user-signing keys. A local requester's remote
    /// users are asked of their servers, each within [`REMOTE_KEYS_TIMEOUT`].
    pub async fn query_keys(
        &self,
        requester: Option<&UserId>,
        wanted: &BTreeMap<OwnedUserId, Vec<String>>,
    ) -> Result<Value> {
        let mut response = json!({
            "device_keys": {}, "master_keys": {}, "self_signing_keys": {},
            "user_signing_keys": {}, "failures": {},
        });
        let mut remote: BTreeMap<&ServerName, Map<String, Value>> = BTreeMap::new();
        for (user_id, devices) in wanted {
            if user_id.server_name() != self.config.server_name.as_str() {
                if requester.is_some() {
                    remote
                        .entry(user_id.server_name())
                        .or_default()
                        .insert(user_id.to_string(), json!(devices));
                }
                continue;
            }
            let signatures = self.store.key_signatures(user_id.as_str()).await?;
            let mut by_device = Map::new();
            for (device_id, json, display_name) in self.store.device_keys(user_id.as_str()).await? {
                if !devices.is_empty() && !devices.contains(&device_id) {
                    continue;
                }
                let Ok(mut keys) = object(&json) else {
                    continue;
                };
                let extra: Vec<&KeySignature> = signatures
                    .iter()
                    .filter(|s| s.target_key_id == device_id)
                    .collect();
                merge_signatures(&mut keys, &extra);
                // Always present, as Synapse sends it (SyTest and some clients look for it).
                let unsigned = match display_name {
                    Some(name) => json!({ "device_display_name": name }),
                    None => json!({}),
                };
                keys.insert("unsigned".into(), unsigned);
                by_device.insert(device_id, Value::Object(keys));
            }
            response["device_keys"][user_id.as_str()] = Value::Object(by_device);
            for (key_type, json) in self.store.cross_signing_keys(user_id.as_str()).await? {
                if key_type == "user_signing" && requester != Some(&**user_id) {
                    continue;
                }
                let Ok(mut key) = object(&json) else { continue };
                let Some(public) = cross_signing_public_key(&key) else {
                    continue;
                };
                // Someone's signature on another user's master key is their private business.
                let extra: Vec<&KeySignature> = signatures
                    .iter()
                    .filter(|s| {
                        s.target_key_id == public
                            && (s.signer_user_id == user_id.as_str()
                                || requester.is_some_and(|r| s.signer_user_id == r.as_str()))
                    })
                    .collect();
                merge_signatures(&mut key, &extra);
                response[format!("{key_type}_keys")][user_id.as_str()] = Value::Object(key);
            }
        }
        self.ask_remote_keys(
            remote,
            "device_keys",
            "/_matrix/federation/v1/user/keys/query",
            &["device_keys", "master_keys", "self_signing_keys"],
            &mut response,
        )
        .await;
        Ok(response)
    }

    /// `POST /keys/claim`: a one-time key per requested device, else its fallback key.
    /// `local_requester` is false when another server asks: only local users are answered.
    pub async fn claim_keys(
        &self,
        wanted: &BTreeMap<OwnedUserId, BTreeMap<String, String>>,
        local_requester: bool,
    ) -> Result<Value> {
        let mut response = json!({ "one_time_keys": {}, "failures": {} });
        let mut owners = Vec::new();
        let mut remote: BTreeMap<&ServerName, Map<String, Value>> = BTreeMap::new();
        for (user_id, devices) in wanted {
            if user_id.server_name() != self.config.server_name.as_str() {
                if local_requester {
                    remote
                        .entry(user_id.server_name())
                        .or_default()
                        .insert(user_id.to_string(), json!(devices));
                }
                continue;
            }
            let mut claimed = Map::new();
            for (device_id, algorithm) in devices {
                if let Some((key_id, json)) = self
                    .store
                    .claim_key(user_id.as_str(), device_id, algorithm)
                    .await?
                    && let Ok(key) = serde_json::from_str::<Value>(&json)
                {
                    claimed.insert(device_id.clone(), json!({ key_id: key }));
                }
            }
            if !claimed.is_empty() {
                response["one_time_keys"][user_id.as_str()] = Value::Object(claimed);
                owners.push(user_id);
            }
        }
        // Their waiting syncs answer with key counts from before the claim: re-read them.
        self.bus.wake(owners.iter().map(|u| &***u));
        self.ask_remote_keys(
            remote,
            "one_time_keys",
            "/_matrix/federation/v1/user/keys/claim",
            &["one_time_keys"],
            &mut response,
        )
        .await;
        Ok(response)
    }

    /// `POST /keys/device_signing/upload`. Needs UIA only to replace an existing identity
    /// (MSC3967): the first upload, and re-uploading the same keys, go through without it.
    pub async fn upload_cross_signing_keys(
        &self,
        user_id: &UserId,
        uploaded: [Option<&str>; 3],
        auth: Option<&ruma::api::client::uiaa::AuthData>,
    ) -> Result<()> {
        let stored: BTreeMap<String, String> = self
            .store
            .cross_signing_keys(user_id.as_str())
            .await?
            .into_iter()
            .collect();
        let mut parsed: Vec<(String, Map<String, Value>, String)> = Vec::new();
        for (key_type, json) in CROSS_SIGNING_TYPES.iter().zip(uploaded) {
            let Some(json) = json else { continue };
            let key = object(json)?;
            if key.get("user_id").and_then(Value::as_str) != Some(user_id.as_str()) {
                return Err(Error::invalid_param(format!(
                    "The {key_type} key must belong to {user_id}"
                )));
            }
            let usage_ok = key
                .get("usage")
                .and_then(Value::as_array)
                .is_some_and(|u| u.iter().any(|v| v.as_str() == Some(key_type)));
            if !usage_ok {
                return Err(Error::invalid_param(format!(
                    "The {key_type} key must list \"{key_type}\" in its usage"
                )));
            }
            if cross_signing_public_key(&key).is_none() {
                return Err(Error::invalid_param(format!(
                    "The {key_type} key must hold exactly one ed25519 key"
                )));
            }
            parsed.push(((*key_type).to_owned(), key, json.to_owned()));
        }
        if parsed.is_empty() {
            return Ok(());
        }
        let master = match parsed.iter().find(|(t, _, _)| t == "master") {
            Some((_, key, _)) => Some(key.clone()),
            None => stored.get("master").map(|j| object(j)).transpose()?,
        };
        let Some(master_public) = master.as_ref().and_then(cross_signing_public_key) else {
            return Err(Error::invalid_param(
                "Upload a master key before (or with) the other cross-signing keys",
            ));
        };
        for (key_type, key, _) in &parsed {
            if key_type != "master"
                && !signature_valid(
                    key,
                    user_id.as_str(),
                    &format!("ed25519:{master_public}"),
                    &master_public,
                )
            {
                return Err(Error::Detailed {
                    status: http::StatusCode::BAD_REQUEST,
                    errcode: "M_INVALID_SIGNATURE",
                    message: format!("The {key_type} key is not signed by the master key"),
                    extra: Map::new(),
                });
            }
        }
        let unchanged = parsed.iter().all(|(key_type, key, _)| {
            stored
                .get(key_type)
                .and_then(|j| object(j).ok())
                .is_some_and(|s| signed_part(&s) == signed_part(key))
        });
        if unchanged {
            return Ok(());
        }
        if stored.contains_key("master") {
            // Approved on the account page (MSC4312's m.oauth stage): no other proof, once.
            let approved = self
                .store
                .take_cross_signing_reset(user_id.as_str(), self.now_ms())
                .await?;
            if !approved {
                let mut flows = self.account_flows(user_id).await?;
                flows.push(ruma::api::client::uiaa::AuthFlow::new(vec![
                    ruma::api::client::uiaa::AuthType::OAuth,
                ]));
                self.user_interactive_auth(
                    UiaOperation::ReplaceCrossSigning,
                    "",
                    Some(user_id),
                    flows,
                    auth,
                )
                .await?;
            }
        }
        let new_master = parsed.iter().any(|(t, key, _)| {
            t == "master"
                && stored
                    .get("master")
                    .and_then(|j| object(j).ok())
                    .and_then(|s| cross_signing_public_key(&s))
                    != cross_signing_public_key(key)
        });
        let rows: Vec<(String, String)> = parsed.into_iter().map(|(t, _, j)| (t, j)).collect();
        self.store
            .set_cross_signing_keys(user_id.as_str(), &rows, new_master)
            .await?;
        self.wake_device_watchers(user_id).await
    }

    /// `POST /keys/signatures/upload`: verifies each new signature by the requester against
    /// the key that made it and stores the good ones; the rest are reported per key.
    pub async fn upload_signatures(
        &self,
        requester: &UserId,
        signed: Vec<(OwnedUserId, String, String)>,
    ) -> Result<Value> {
        let mut failures = Map::new();
        let mut accepted: Vec<KeySignature> = Vec::new();
        let own_cross: BTreeMap<String, Map<String, Value>> = self
            .store
            .cross_signing_keys(requester.as_str())
            .await?
            .into_iter()
            .filter_map(|(t, j)| object(&j).ok().map(|k| (t, k)))
            .collect();
        let own_devices: BTreeMap<String, Map<String, Value>> = self
            .store
            .device_keys(requester.as_str())
            .await?
            .into_iter()
            .filter_map(|(d, j, _)| object(&j).ok().map(|k| (d, k)))
            .collect();
        for (user_id, key_id, json) in signed {
            let outcome = self
                .check_signed_key(
                    requester,
                    &user_id,
                    &key_id,
                    &json,
                    &own_cross,
                    &own_devices,
                )
                .await?;
            match outcome {
                Ok(mut signatures) => accepted.append(&mut signatures),
                Err(message) => {
                    let entry = failures
                        .entry(user_id.to_string())
                        .or_insert_with(|| Value::Object(Map::new()));
                    entry[key_id] = json!({ "errcode": "M_INVALID_SIGNATURE", "error": message });
                }
            }
        }
        let mut targets: Vec<String> = accepted.iter().map(|s| s.target_user_id.clone()).collect();
        targets.sort();
        targets.dedup();
        self.store.add_key_signatures(&accepted).await?;
        for target in targets {
            if let Ok(target) = UserId::parse(target) {
                self.wake_device_watchers(&target).await?;
            }
        }
        Ok(json!({ "failures": failures }))
    }

    /// The requester's verified new signatures on one uploaded key, or why none count.
    async fn check_signed_key(
        &self,
        requester: &UserId,
        user_id: &UserId,
        key_id: &str,
        json: &str,
        own_cross: &BTreeMap<String, Map<String, Value>>,
        own_devices: &BTreeMap<String, Map<String, Value>>,
    ) -> Result<std::result::Result<Vec<KeySignature>, String>> {
        let Ok(uploaded) = object(json) else {
            return Ok(Err("Not a JSON object".into()));
        };
        // The stored key the upload claims to sign, and which of the requester's keys may.
        let (stored, signers): (Option<Map<String, Value>>, Signers) = if user_id == requester {
            if let Some(device) = own_devices.get(key_id) {
                let signers = own_cross
                    .get("self_signing")
                    .and_then(cross_signing_public_key)
                    .map(|p| (format!("ed25519:{p}"), p))
                    .into_iter()
                    .collect();
                (Some(device.clone()), signers)
            } else if own_cross
                .get("master")
                .and_then(cross_signing_public_key)
                .as_deref()
                == Some(key_id)
            {
                let signers = own_devices
                    .iter()
                    .filter_map(|(device_id, keys)| {
                        let id = format!("ed25519:{device_id}");
                        let public = keys.get("keys")?.get(&id)?.as_str()?.to_owned();
                        Some((id, public))
                    })
                    .collect();
                (own_cross.get("master").cloned(), signers)
            } else {
                (None, Vec::new())
            }
        } else {
            let master = self
                .store
                .cross_signing_keys(user_id.as_str())
                .await?
                .into_iter()
                .find(|(t, _)| t == "master")
                .and_then(|(_, j)| object(&j).ok())
                .filter(|k| cross_signing_public_key(k).as_deref() == Some(key_id));
            let signers = own_cross
                .get("user_signing")
                .and_then(cross_signing_public_key)
                .map(|p| (format!("ed25519:{p}"), p))
                .into_iter()
                .collect();
            (master, signers)
        };
        let Some(stored) = stored else {
            return Ok(Err(format!(
                "{user_id} has no key {key_id} that you can sign"
            )));
        };
        if signed_part(&stored) != signed_part(&uploaded) {
            return Ok(Err("The signed object differs from the stored key".into()));
        }
        let mut found = Vec::new();
        let new_signatures = uploaded
            .get("signatures")
            .and_then(|s| s.get(requester.as_str()))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (signer_key_id, signature) in new_signatures {
            let Some((_, public)) = signers.iter().find(|(id, _)| *id == signer_key_id) else {
                continue;
            };
            if !signature_valid(&uploaded, requester.as_str(), &signer_key_id, public) {
                return Ok(Err(format!(
                    "The signature by {signer_key_id} does not verify"
                )));
            }
            let Some(signature) = signature.as_str() else {
                continue;
            };
            found.push(KeySignature {
                target_user_id: user_id.to_string(),
                target_key_id: key_id.to_owned(),
                signer_user_id: requester.to_string(),
                signer_key_id,
                signature: signature.to_owned(),
            });
        }
        if found.is_empty() {
            return Ok(Err(
                "No signature by a key of yours that may sign this key".into()
            ));
        }
        Ok(Ok(found))
    }

    /// Device-list changes between two positions: users whose keys changed and who share a
    /// room, users who newly share one, and users who no longer share any.
    pub async fn device_list_delta(
        &self,
        user_id: &UserId,
        (events_after, events_upto): (i64, i64),
        (lists_after, lists_upto): (i64, i64),
    ) -> Result<DeviceListDelta> {
        let mut delta = DeviceListDelta::default();
        // Each query only when its stream moved: most syncs see neither change.
        if lists_upto > lists_after {
            for user in self
                .store
                .device_list_changes_for(user_id.as_str(), lists_after, lists_upto)
                .await?
            {
                if let Ok(user) = UserId::parse(user) {
                    delta.changed.insert(user);
                }
            }
        }
        let memberships = if events_upto > events_after {
            self.store
                .membership_changes_around(user_id.as_str(), events_after, events_upto)
                .await?
        } else {
            Vec::new()
        };
        let mut left_candidates = BTreeSet::new();
        for (_room, mine, my_since, member, theirs, their_since) in memberships {
            let Ok(member) = UserId::parse(member) else {
                continue;
            };
            let i_joined_now = mine == "join" && my_since > events_after;
            let i_left_now = mine != "join";
            let they_changed_now = their_since > events_after && their_since <= events_upto;
            if i_left_now {
                // Whether they are still there or left too, we no longer share this room.
                if theirs == "join" || they_changed_now {
                    left_candidates.insert(member);
                }
            } else if theirs == "join" && (i_joined_now || they_changed_now) {
                delta.changed.insert(member);
            } else if matches!(theirs.as_str(), "leave" | "ban") && they_changed_now {
                left_candidates.insert(member);
            }
        }
        for member in left_candidates {
            if delta.changed.contains(&member) {
                continue;
            }
            if !self
                .store
                .share_a_room(user_id.as_str(), member.as_str())
                .await?
            {
                delta.left.insert(member);
            }
        }
        Ok(delta)
    }
}

impl Services {
    /// Asks each server of `remote` (its users, as the body's `field`) at `path`, all at once
    /// and each within [`REMOTE_KEYS_TIMEOUT`], and copies the answers' `sections` into
    /// `response` — only for users of the server that answered; a server that could not be
    /// asked is listed in `failures`.
    async fn ask_remote_keys(
        &self,
        remote: BTreeMap<&ServerName, Map<String, Value>>,
        field: &str,
        path: &str,
        sections: &[&str],
        response: &mut Value,
    ) {
        let asked = remote.into_iter().map(|(server, users)| async move {
            let body = json!({ field: users });
            let answer = self
                .federation_json(
                    server,
                    http::Method::POST,
                    path,
                    Some(&body),
                    REMOTE_KEYS_TIMEOUT,
                )
                .await;
            (server, answer)
        });
        for (server, answer) in futures_util::future::join_all(asked).await {
            let answer = match answer {
                Ok(answer) => answer,
                Err(error) => {
                    response["failures"][server.as_str()] = remote_failure(&error);
                    continue;
                }
            };
            for section in sections {
                let Some(Value::Object(users)) = answer.get(*section) else {
                    continue;
                };
                for (user, keys) in users {
                    if UserId::parse(user.as_str()).is_ok_and(|u| u.server_name() == server) {
                        response[*section][user.as_str()] = keys.clone();
                    }
                }
            }
        }
    }
}

/// A key query's users and devices as the services take them (client and federation
/// requests name them with the same types).
pub fn wanted_devices<D: std::fmt::Display>(
    asked: &BTreeMap<OwnedUserId, Vec<D>>,
) -> BTreeMap<OwnedUserId, Vec<String>> {
    asked
        .iter()
        .map(|(user, devices)| {
            (
                user.clone(),
                devices.iter().map(ToString::to_string).collect(),
            )
        })
        .collect()
}

/// A key claim's users, devices and algorithms as the services take them.
pub fn wanted_claims<D: std::fmt::Display, A: std::fmt::Display>(
    asked: &BTreeMap<OwnedUserId, BTreeMap<D, A>>,
) -> BTreeMap<OwnedUserId, BTreeMap<String, String>> {
    asked
        .iter()
        .map(|(user, devices)| {
            let devices = devices.iter().map(|(d, a)| (d.to_string(), a.to_string()));
            (user.clone(), devices.collect())
        })
        .collect()
}

/// How long a remote server is waited for in a key query or claim.
pub const REMOTE_KEYS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A `failures` entry for a server that could not be asked.
fn remote_failure(error: &crate::service::federation::FederationError) -> Value {
    use crate::service::federation::FederationError;
    let status = match error {
        FederationError::Remote { status, .. } => status.as_u16(),
        FederationError::Disabled => 403,
        _ => 503,
    };
    json!({ "status": status, "message": error.to_string() })
}
