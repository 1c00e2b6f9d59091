//! End-to-end encryption plumbing over raw HTTP, on both backends: what the key endpoints
//! promise (counts, claims, fallback keys, device lists, signatures), to-device delivery and
//! key backup. The encrypted conversation with real `matrix-sdk` clients is in `tests/e2ee`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, assert_error, both_backends};

both_backends!(
    key_endpoints_keep_their_promises,
    to_device_messages_arrive_exactly_once,
    key_backup_keeps_the_better_key,
    private_key_changes_are_told_only_to_their_owner,
);

const PASSWORD: &str = "e2ee password";

/// Raw HTTP: one logged-in device.
struct Device {
    token: String,
    device_id: String,
}

async fn device(srv: &TestServer, user: &str) -> Device {
    let login = srv.login(user, PASSWORD).await;
    Device {
        token: login["access_token"].as_str().expect("token").to_owned(),
        device_id: login["device_id"].as_str().expect("device").to_owned(),
    }
}

async fn put(srv: &TestServer, token: &str, path: &str, body: &Value) -> (u16, Value) {
    srv.request(
        reqwest::Method::PUT,
        path,
        Some(token),
        Some(serde_json::to_vec(body).expect("json")),
    )
    .await
}

async fn raw_sync(srv: &TestServer, token: &str, since: Option<&str>) -> Value {
    let path = match since {
        Some(since) => format!("/_matrix/client/v3/sync?timeout=0&since={since}"),
        None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
    };
    let (status, body) = srv.get(&path, Some(token)).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn device_keys(user: &str, device: &str) -> Value {
    json!({
        "user_id": user, "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{device}"): "curve",
            format!("ed25519:{device}"): "edkey",
        },
        "signatures": {user: {format!("ed25519:{device}"): "sig"}},
    })
}

async fn key_endpoints_keep_their_promises(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.register("alice", PASSWORD).await;
    srv.register("bob", PASSWORD).await;
    let alice = device(&srv, "alice").await;
    let bob = device(&srv, "bob").await;
    let upload = |d: &Device, body: Value| {
        let token = d.token.clone();
        let srv = &srv;
        async move {
            srv.post_json("/_matrix/client/v3/keys/upload", Some(&token), &body)
                .await
        }
    };

    // Keys naming another device or user are refused and nothing is stored.
    assert_error(
        &upload(
            &alice,
            json!({"device_keys": device_keys("@alice:localhost", "SOMEONEELSE")}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &upload(
            &alice,
            json!({"device_keys": device_keys("@bob:localhost", &alice.device_id)}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &upload(&alice, json!({"one_time_keys": {"nocolon": "x"}})).await,
        400,
        "M_BAD_JSON",
    );
    let query = json!({"device_keys": {"@alice:localhost": []}});
    let (_, found) = srv
        .post_json("/_matrix/client/v3/keys/query", Some(&bob.token), &query)
        .await;
    assert_eq!(
        found["device_keys"]["@alice:localhost"],
        json!({}),
        "{found}"
    );

    // Two one-time keys and a fallback key; counts come back and in sync.
    let (status, counts) = upload(
        &alice,
        json!({
            "device_keys": device_keys("@alice:localhost", &alice.device_id),
            "one_time_keys": {
                "signed_curve25519:AAAAAQ": {"key": "otk1", "signatures": {}},
                "signed_curve25519:AAAAAg": {"key": "otk2", "signatures": {}},
            },
            "fallback_keys": {
                "signed_curve25519:AAAAAw": {"key": "fb", "fallback": true, "signatures": {}},
            },
        }),
    )
    .await;
    assert_eq!(status, 200, "{counts}");
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 2);
    let first = raw_sync(&srv, &alice.token, None).await;
    assert_eq!(first["device_one_time_keys_count"]["signed_curve25519"], 2);
    assert_eq!(
        first["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    // Bob sees Alice's device keys exactly as uploaded, with its display name.
    let (_, found) = srv
        .post_json("/_matrix/client/v3/keys/query", Some(&bob.token), &query)
        .await;
    let keys = &found["device_keys"]["@alice:localhost"][&alice.device_id];
    assert_eq!(
        keys["keys"],
        device_keys("@alice:localhost", &alice.device_id)["keys"]
    );
    // A remote server's users are reported as failures, not errors.
    let remote = srv
        .post_json(
            "/_matrix/client/v3/keys/query",
            Some(&bob.token),
            &json!({"device_keys": {"@carol:elsewhere.example": []}}),
        )
        .await;
    assert_eq!(remote.0, 200);
    assert!(
        remote.1["failures"]["elsewhere.example"].is_object(),
        "{}",
        remote.1
    );

    // A key ID uploaded again unchanged is fine; with other content it is refused.
    let again = upload(
        &alice,
        json!({"one_time_keys": {"signed_curve25519:AAAAAQ": {"key": "otk1", "signatures": {}}}}),
    )
    .await;
    assert_eq!(again.0, 200, "{}", again.1);
    assert_error(
        &upload(
            &alice,
            json!({"one_time_keys": {"signed_curve25519:AAAAAQ": {"key": "other", "signatures": {}}}}),
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );

    // Claims: the two one-time keys once each, then the fallback key (again and again).
    let claim =
        json!({"one_time_keys": {"@alice:localhost": {&alice.device_id: "signed_curve25519"}}});
    let mut claimed = Vec::new();
    for _ in 0..4 {
        let (status, body) = srv
            .post_json("/_matrix/client/v3/keys/claim", Some(&bob.token), &claim)
            .await;
        assert_eq!(status, 200, "{body}");
        let keys = body["one_time_keys"]["@alice:localhost"][&alice.device_id]
            .as_object()
            .expect("a key")
            .clone();
        claimed.push(
            keys.values().next().expect("key")["key"]
                .as_str()
                .expect("key")
                .to_owned(),
        );
    }
    assert_eq!(claimed, ["otk1", "otk2", "fb", "fb"]);
    let after = raw_sync(&srv, &alice.token, None).await;
    assert_eq!(
        after["device_one_time_keys_count"]["signed_curve25519"], 0,
        "an exhausted algorithm is reported as 0, so clients top up: {after}"
    );
    assert_eq!(
        after["device_unused_fallback_key_types"],
        json!([]),
        "the fallback key was used"
    );

    // Bob shares a room with Alice: her device list changes reach his incremental sync.
    let (_, room) = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            &json!({"preset": "public_chat"}),
        )
        .await;
    let room_id = room["room_id"].as_str().expect("room").to_owned();
    let bob_first = raw_sync(&srv, &bob.token, None).await;
    let since = bob_first["next_batch"].as_str().expect("token").to_owned();
    let joined = srv
        .post_json(
            &format!("/_matrix/client/v3/join/{room_id}"),
            Some(&bob.token),
            &json!({}),
        )
        .await;
    assert_eq!(joined.0, 200);
    let bob_next = raw_sync(&srv, &bob.token, Some(&since)).await;
    let changed = &bob_next["device_lists"]["changed"];
    assert!(
        changed
            .as_array()
            .is_some_and(|c| c.contains(&json!("@alice:localhost"))),
        "joining a room with Alice marks her devices changed: {bob_next}"
    );
    let since = bob_next["next_batch"].as_str().expect("token").to_owned();
    let (status, changes) = srv
        .get(
            &format!(
                "/_matrix/client/v3/keys/changes?from={}&to={since}",
                first_token(&bob_first)
            ),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200, "{changes}");
    assert!(
        changes["changed"]
            .as_array()
            .expect("changed")
            .contains(&json!("@alice:localhost"))
    );

    // Alice signs in a second device and deletes the first: Bob is told, the keys are gone.
    let alice2 = device(&srv, "alice").await;
    let (status, _) = upload(
        &alice2,
        json!({"device_keys": device_keys("@alice:localhost", &alice2.device_id)}),
    )
    .await;
    assert_eq!(status, 200);
    let bob_after = raw_sync(&srv, &bob.token, Some(&since)).await;
    assert!(
        bob_after["device_lists"]["changed"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("@alice:localhost"))),
        "{bob_after}"
    );
    let since = bob_after["next_batch"].as_str().expect("token").to_owned();
    let deleted = srv
        .post_with_password_uia(
            "/_matrix/client/v3/delete_devices",
            &alice2.token,
            json!({"devices": [alice.device_id]}),
            "alice",
            PASSWORD,
        )
        .await;
    assert_eq!(deleted.0, 200, "{}", deleted.1);
    let bob_last = raw_sync(&srv, &bob.token, Some(&since)).await;
    assert!(
        bob_last["device_lists"]["changed"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("@alice:localhost"))),
        "{bob_last}"
    );
    let (_, found) = srv
        .post_json("/_matrix/client/v3/keys/query", Some(&bob.token), &query)
        .await;
    let devices = found["device_keys"]["@alice:localhost"]
        .as_object()
        .expect("devices");
    assert_eq!(
        devices.keys().collect::<Vec<_>>(),
        [&alice2.device_id],
        "{found}"
    );

    // Alice leaves the only room she shared with Bob: he stops tracking her.
    let since = bob_last["next_batch"].as_str().expect("token").to_owned();
    let left = srv
        .post_json(
            &format!("/_matrix/client/v3/rooms/{room_id}/leave"),
            Some(&alice2.token),
            &json!({}),
        )
        .await;
    assert_eq!(left.0, 200);
    let bob_left = raw_sync(&srv, &bob.token, Some(&since)).await;
    assert_eq!(
        bob_left["device_lists"]["left"],
        json!(["@alice:localhost"]),
        "{bob_left}"
    );

    // Cross-signing: keys not signed by the master key are refused; bad signatures on
    // uploads are reported per key and change nothing.
    let bad = srv
        .post_json(
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(&alice2.token),
            &json!({
                "master_key": {"user_id": "@alice:localhost", "usage": ["master"],
                               "keys": {"ed25519:bWFzdGVy": "bWFzdGVy"}},
                "self_signing_key": {"user_id": "@alice:localhost", "usage": ["self_signing"],
                                     "keys": {"ed25519:c2VsZg": "c2VsZg"},
                                     "signatures": {"@alice:localhost": {"ed25519:bWFzdGVy": "AAAA"}}},
            }),
        )
        .await;
    assert_error(&bad, 400, "M_INVALID_SIGNATURE");
    let bad_usage = srv
        .post_json(
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(&alice2.token),
            &json!({"master_key": {"user_id": "@bob:localhost", "usage": ["master"],
                                   "keys": {"ed25519:bWFzdGVy": "bWFzdGVy"}}}),
        )
        .await;
    assert_error(&bad_usage, 400, "M_INVALID_PARAM");
    let (_, found) = srv
        .post_json("/_matrix/client/v3/keys/query", Some(&bob.token), &query)
        .await;
    assert!(
        found["master_keys"]["@alice:localhost"].is_null(),
        "{found}"
    );
    let mut forged = device_keys("@alice:localhost", &alice2.device_id);
    forged["signatures"]["@bob:localhost"] = json!({"ed25519:BOBDEVICE": "forged"});
    let (status, answer) = srv
        .post_json(
            "/_matrix/client/v3/keys/signatures/upload",
            Some(&bob.token),
            &json!({"@alice:localhost": {&alice2.device_id: forged}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["failures"]["@alice:localhost"][&alice2.device_id]["errcode"], "M_INVALID_SIGNATURE",
        "{answer}"
    );
    srv.finish().await;
}

fn first_token(sync: &Value) -> &str {
    sync["next_batch"].as_str().expect("token")
}

async fn to_device_messages_arrive_exactly_once(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.register("alice", PASSWORD).await;
    srv.register("bob", PASSWORD).await;
    let alice = device(&srv, "alice").await;
    let bob = device(&srv, "bob").await;
    let bob2 = device(&srv, "bob").await;
    let first = raw_sync(&srv, &bob.token, None).await;
    let since = first_token(&first).to_owned();

    // The same transaction twice (a client retrying) is delivered once; "*" reaches every device.
    let body = json!({"messages": {"@bob:localhost": {&bob.device_id: {"n": 1}, "*": {"n": 2}}}});
    for _ in 0..2 {
        let (status, answer) = put(
            &srv,
            &alice.token,
            "/_matrix/client/v3/sendToDevice/m.test/txn1",
            &body,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    let got = raw_sync(&srv, &bob.token, Some(&since)).await;
    let events = got["to_device"]["events"]
        .as_array()
        .expect("events")
        .clone();
    let numbers: Vec<i64> = events
        .iter()
        .map(|e| e["content"]["n"].as_i64().expect("n"))
        .collect();
    assert_eq!(numbers, [1, 2], "{got}");
    assert_eq!(events[0]["sender"], "@alice:localhost");
    assert_eq!(events[0]["type"], "m.test");
    let other = raw_sync(&srv, &bob2.token, None).await;
    assert_eq!(
        other["to_device"]["events"].as_array().map(Vec::len),
        Some(1),
        "{other}"
    );

    // Syncing on from that response acknowledges them: they are not sent again…
    let next = first_token(&got).to_owned();
    let again = raw_sync(&srv, &bob.token, Some(&next)).await;
    assert!(
        again["to_device"]["events"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{again}"
    );

    // A long-polling sync wakes for a to-device message.
    let waiting = {
        let srv_url = srv.url(&format!(
            "/_matrix/client/v3/sync?timeout=20000&since={}",
            first_token(&again)
        ));
        let token = bob.token.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let body: Value = reqwest::Client::new()
                .get(srv_url)
                .bearer_auth(token)
                .send()
                .await
                .expect("sync")
                .json()
                .await
                .expect("json");
            (started.elapsed(), body)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = put(
        &srv,
        &alice.token,
        "/_matrix/client/v3/sendToDevice/m.test/txn2",
        &json!({"messages": {"@bob:localhost": {&bob.device_id: {"n": 3}}}}),
    )
    .await;
    assert_eq!(status, 200);
    let (waited, woke) = waiting.await.expect("sync task");
    assert!(waited < Duration::from_secs(15), "woke after {waited:?}");
    assert_eq!(woke["to_device"]["events"][0]["content"]["n"], 3, "{woke}");

    // Bad input: an oversized message is refused whole.
    let huge = "x".repeat(70_000);
    let refused = put(
        &srv,
        &alice.token,
        "/_matrix/client/v3/sendToDevice/m.test/txn3",
        &json!({"messages": {"@bob:localhost": {&bob.device_id: {"blob": huge}}}}),
    )
    .await;
    assert!(refused.0 == 413, "{refused:?}");
    let quiet = raw_sync(&srv, &bob.token, Some(first_token(&woke))).await;
    assert!(
        quiet["to_device"]["events"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{quiet}"
    );
    srv.finish().await;
}

async fn key_backup_keeps_the_better_key(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    srv.register("alice", PASSWORD).await;
    let alice = device(&srv, "alice").await;
    let token = Some(alice.token.as_str());

    assert_error(
        &srv.get("/_matrix/client/v3/room_keys/version", token).await,
        404,
        "M_NOT_FOUND",
    );
    let algorithm = json!({
        "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
        "auth_data": {"public_key": "cHVibGlj", "signatures": {}},
    });
    let (status, created) = srv
        .post_json("/_matrix/client/v3/room_keys/version", token, &algorithm)
        .await;
    assert_eq!(status, 200, "{created}");
    let v1 = created["version"].as_str().expect("version").to_owned();
    let key = |index: u64, forwarded: u64, verified: bool, data: &str| {
        json!({
            "first_message_index": index, "forwarded_count": forwarded,
            "is_verified": verified,
            "session_data": {"ephemeral": data, "ciphertext": data, "mac": data},
        })
    };
    let path =
        |v: &str| format!("/_matrix/client/v3/room_keys/keys/!room:localhost/sess1?version={v}");
    let (status, stored) = put(&srv, &alice.token, &path(&v1), &key(5, 1, false, "first")).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["count"], 1);
    let etag = stored["etag"].clone();

    // Worse (a later index) and equal keys change nothing, not even the etag.
    let (_, same) = put(&srv, &alice.token, &path(&v1), &key(7, 0, false, "worse")).await;
    assert_eq!(same["etag"], etag);
    // Better keys replace: verified beats unverified, then a lower index, then fewer forwards.
    let (_, better) = put(&srv, &alice.token, &path(&v1), &key(9, 3, true, "verified")).await;
    assert_ne!(better["etag"], etag);
    let (_, better2) = put(&srv, &alice.token, &path(&v1), &key(2, 3, true, "lower")).await;
    let (_, worse) = put(
        &srv,
        &alice.token,
        &path(&v1),
        &key(2, 5, true, "forwarded more"),
    )
    .await;
    assert_eq!(worse["etag"], better2["etag"]);
    let (status, got) = srv.get(&path(&v1), token).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["session_data"]["ciphertext"], "lower");

    // A new version becomes current: writes to the old one are refused, saying which is.
    let (_, created) = srv
        .post_json("/_matrix/client/v3/room_keys/version", token, &algorithm)
        .await;
    let v2 = created["version"].as_str().expect("version").to_owned();
    let refused = put(&srv, &alice.token, &path(&v1), &key(0, 0, true, "late")).await;
    assert_error(&refused, 403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(refused.1["current_version"], v2.as_str());
    let (_, info) = srv.get("/_matrix/client/v3/room_keys/version", token).await;
    assert_eq!(info["version"], v2.as_str());
    assert_eq!(info["count"], 0);
    // The old version's keys are still readable until it is deleted.
    let (status, all) = srv
        .get(
            &format!("/_matrix/client/v3/room_keys/keys?version={v1}"),
            token,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        all["rooms"]["!room:localhost"]["sessions"]["sess1"].is_object(),
        "{all}"
    );

    // Updating auth data keeps the algorithm; changing it is refused.
    let mut other = algorithm.clone();
    other["algorithm"] = json!("org.example.other");
    assert_error(
        &put(
            &srv,
            &alice.token,
            &format!("/_matrix/client/v3/room_keys/version/{v2}"),
            &other,
        )
        .await,
        400,
        "M_INVALID_PARAM",
    );
    // Malformed keys and unknown versions.
    assert_error(
        &put(
            &srv,
            &alice.token,
            &path(&v2),
            &json!({"first_message_index": -1}),
        )
        .await,
        400,
        "M_BAD_JSON",
    );
    assert_error(&srv.get(&path("999999"), token).await, 404, "M_NOT_FOUND");
    assert_error(&srv.get(&path("abc"), token).await, 404, "M_NOT_FOUND");

    // Deleting a version deletes its keys.
    let (status, _) = srv
        .request(
            reqwest::Method::DELETE,
            &format!("/_matrix/client/v3/room_keys/version/{v1}"),
            token,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_error(&srv.get(&path(&v1), token).await, 404, "M_NOT_FOUND");
    srv.finish().await;
}

/// A cross-signing key pair whose key ID is `ed25519:<its public key>`, and that ID.
fn signing_key() -> (ruma::signatures::Ed25519KeyPair, String) {
    use base64::Engine;
    let der = ruma::signatures::Ed25519KeyPair::generate();
    let probe = ruma::signatures::Ed25519KeyPair::from_der(&der, "x".to_owned()).expect("pair");
    let public = base64::engine::general_purpose::STANDARD_NO_PAD.encode(probe.public_key());
    let pair = ruma::signatures::Ed25519KeyPair::from_der(&der, public.clone()).expect("pair");
    (pair, public)
}

/// A cross-signing key of `user` for `usage`, signed by `signer` (as `signer_user`) if given.
fn cross_key(
    user: &str,
    usage: &str,
    public: &str,
    signer: Option<(&str, &ruma::signatures::Ed25519KeyPair)>,
) -> Value {
    let key =
        json!({"user_id": user, "usage": [usage], "keys": {format!("ed25519:{public}"): public}});
    match signer {
        None => key,
        Some((signer_user, pair)) => {
            let mut object: ruma::CanonicalJsonObject =
                serde_json::from_value(key).expect("canonical");
            ruma::signatures::sign_json(signer_user, pair, &mut object).expect("signed");
            serde_json::to_value(object).expect("json")
        }
    }
}

fn changed(sync: &Value) -> Vec<String> {
    sync["device_lists"]["changed"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A new user-signing key is its owner's business, and so is a signature made with it on
/// another user's key: device-list changes tell only that user (as the spec keeps both
/// private, and as `/keys/query` already does), while a new master or self-signing key is
/// told to everyone who shares a room.
async fn private_key_changes_are_told_only_to_their_owner(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    for user in ["alice", "bob", "carol"] {
        srv.register(user, PASSWORD).await;
    }
    let (alice, bob, carol) = (
        device(&srv, "alice").await,
        device(&srv, "bob").await,
        device(&srv, "carol").await,
    );
    let (_, room) = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            &json!({"preset": "public_chat"}),
        )
        .await;
    let room = room["room_id"].as_str().expect("room").to_owned();
    for joiner in [&bob, &carol] {
        srv.post_json(
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&joiner.token),
            &json!({}),
        )
        .await;
    }
    let upload = "/_matrix/client/v3/keys/device_signing/upload";
    let (master, master_public) = signing_key();
    let (_, self_public) = signing_key();
    let (user_signing, user_signing_public) = signing_key();
    let alice_id = "@alice:localhost";
    let (status, body) = srv
        .post_json(
            upload,
            Some(&alice.token),
            &json!({
                "master_key": cross_key(alice_id, "master", &master_public, None),
                "self_signing_key": cross_key(alice_id, "self_signing", &self_public, Some((alice_id, &master))),
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let tokens = |syncs: &[&Value]| -> Vec<String> {
        syncs.iter().map(|s| first_token(s).to_owned()).collect()
    };
    let (a, b, c) = (
        raw_sync(&srv, &alice.token, None).await,
        raw_sync(&srv, &bob.token, None).await,
        raw_sync(&srv, &carol.token, None).await,
    );
    let since = tokens(&[&a, &b, &c]);

    // A user-signing key alone: alice hears of it, bob does not.
    let (status, body) = srv
        .post_with_password_uia(
            upload,
            &alice.token,
            json!({"user_signing_key": cross_key(alice_id, "user_signing", &user_signing_public, Some((alice_id, &master)))}),
            "alice",
            PASSWORD,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let a = raw_sync(&srv, &alice.token, Some(&since[0])).await;
    let b = raw_sync(&srv, &bob.token, Some(&since[1])).await;
    assert!(changed(&a).contains(&alice_id.to_owned()), "{a}");
    assert!(!changed(&b).contains(&alice_id.to_owned()), "{b}");

    // Bob's master key: everyone in the room hears of it.
    let (_, bob_master_public) = signing_key();
    let bob_master_key = cross_key("@bob:localhost", "master", &bob_master_public, None);
    let (status, body) = srv
        .post_json(
            upload,
            Some(&bob.token),
            &json!({"master_key": bob_master_key}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let a = raw_sync(&srv, &alice.token, Some(first_token(&a))).await;
    let b = raw_sync(&srv, &bob.token, Some(first_token(&b))).await;
    let c = raw_sync(&srv, &carol.token, Some(&since[2])).await;
    assert!(changed(&a).contains(&"@bob:localhost".to_owned()), "{a}");
    assert!(changed(&c).contains(&"@bob:localhost".to_owned()), "{c}");
    let since = tokens(&[&a, &b, &c]);

    // Alice signs bob's master key with her user-signing key: only she is told.
    let mut signed: ruma::CanonicalJsonObject =
        serde_json::from_value(bob_master_key.clone()).expect("canonical");
    ruma::signatures::sign_json(alice_id, &user_signing, &mut signed).expect("signed");
    let (status, body) = srv
        .post_json(
            "/_matrix/client/v3/keys/signatures/upload",
            Some(&alice.token),
            &json!({"@bob:localhost": {bob_master_public.clone(): signed}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["failures"].as_object().is_none_or(|f| f.is_empty()),
        "the signature is good: {body}"
    );
    let a = raw_sync(&srv, &alice.token, Some(&since[0])).await;
    let b = raw_sync(&srv, &bob.token, Some(&since[1])).await;
    let c = raw_sync(&srv, &carol.token, Some(&since[2])).await;
    assert!(changed(&a).contains(&"@bob:localhost".to_owned()), "{a}");
    assert!(!changed(&b).contains(&"@bob:localhost".to_owned()), "{b}");
    assert!(!changed(&c).contains(&"@bob:localhost".to_owned()), "{c}");
    srv.finish().await;
}
