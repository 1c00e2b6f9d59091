//! Federation: two Matrixon servers on loopback (each with a TLS listener and an IP-literal
//! server name), and Matrixon with a real Synapse, asking each other for keys, profiles,
//! aliases and end-to-end keys; and requests that are unsigned or wrongly signed.

use std::{net::TcpListener, path::Path};

use matrixon::config::Config;
use ruma::{
    CanonicalJsonObject, OwnedServerName, ServerName,
    api::federation::authentication::XMatrix,
    serde::Base64,
    signatures::{Ed25519KeyPair, PublicKeyMap, PublicKeySet},
};
use serde_json::{Value, json};

use crate::{
    harness::{Backend, TestServer, both_backends},
    synapse::Synapse,
};

/// A port nothing listens on now (taken for a server name before the server binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/tls")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Makes `config` a federating server named `127.0.0.1:port` with its TLS listener there,
/// trusting the test CA and allowed to reach loopback.
fn federating(config: &mut Config, port: u16) {
    config.server_name = format!("127.0.0.1:{port}").try_into().expect("server name");
    config.federation.enabled = true;
    config.federation.listen = Some(format!("127.0.0.1:{port}").parse().expect("addr"));
    config.federation.tls_certificate = Some(fixture("server.pem"));
    config.federation.tls_private_key = Some(fixture("server.key"));
    config.federation.extra_ca_file = Some(fixture("ca.pem"));
    config.federation.ip_range_allow = vec!["127.0.0.0/8".to_owned()];
    config.federation.request_timeout_ms = 10_000;
}

/// A federating test server on a free port (another one when the port was taken between
/// finding it free and binding it: tests run side by side).
pub(crate) async fn federating_server(backend: &Backend) -> TestServer {
    federating_server_with(backend, |_| {}).await
}

/// [`federating_server`] with its configuration changed by `tweak`.
async fn federating_server_with(backend: &Backend, tweak: impl Fn(&mut Config)) -> TestServer {
    let mut db = crate::harness::Database::create(backend).await;
    for _ in 0..10 {
        let mut config = crate::harness::test_config(&db.url);
        federating(&mut config, free_port());
        tweak(&mut config);
        match TestServer::try_start_on(db, config).await {
            Ok(server) => return server,
            Err((back, error)) => {
                assert!(
                    format!("{error:?}").contains("Address already in use"),
                    "server starts: {error:?}"
                );
                db = back;
            }
        }
    }
    panic!("no free port for a federation listener after 10 tries");
}

/// An HTTPS client trusting the test CA (for the TLS listeners).
fn https_client() -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(include_bytes!("../fixtures/tls/ca.pem")).expect("ca");
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .expect("https client")
}

/// Registers `localpart` with a display name; its user id and access token.
async fn user(server: &TestServer, localpart: &str, name: &str) -> (String, String) {
    let registered = server.register(localpart, "a long password").await;
    let user_id = registered["user_id"].as_str().expect("user id").to_owned();
    let token = registered["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let path = format!("/_matrix/client/v3/profile/{user_id}/displayname");
    let set = server
        .put_json(&path, Some(&token), &json!({ "displayname": name }))
        .await;
    assert_eq!(set.0, 200, "{:?}", set.1);
    (user_id, token)
}

/// Joins `room_id` on `server` as the user of `token`, through `via`.
async fn join_via(server: &TestServer, token: &str, room_id: &str, via: &str) {
    let (status, joined) = server
        .post_json(
            &format!("/_matrix/client/v3/join/{room_id}?via={via}"),
            Some(token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{joined}");
}

/// Creates a room on `server` as the user of `token` (`createRoom` with `body`): its id.
async fn create_room(server: &TestServer, token: &str, body: &Value) -> String {
    let (status, created) = server
        .post_json("/_matrix/client/v3/createRoom", Some(token), body)
        .await;
    assert_eq!(status, 200, "{created}");
    created["room_id"].as_str().expect("room id").to_owned()
}

fn server_name(server: &TestServer) -> OwnedServerName {
    server
        .server
        .as_ref()
        .expect("running")
        .services
        .config
        .server_name
        .clone()
}

/// Checks a key document's self-signature with the keys it lists.
fn assert_self_signed(document: &Value, server: &str) {
    let object: CanonicalJsonObject = serde_json::from_value(document.clone()).expect("canonical");
    let mut keys = PublicKeySet::new();
    for (id, key) in document["verify_keys"].as_object().expect("verify_keys") {
        keys.insert(
            id.clone(),
            Base64::parse(key["key"].as_str().expect("key")).expect("base64"),
        );
    }
    let mut own = object.clone();
    if let Some(ruma::CanonicalJsonValue::Object(signatures)) = own.get_mut("signatures") {
        signatures.retain(|name, _| name == server);
    }
    ruma::signatures::verify_json(&PublicKeyMap::from([(server.to_owned(), keys)]), &own)
        .expect("the key document verifies with its own key");
}

/// A request to `server`'s federation API signed as `origin` with `key` (perhaps not
/// `origin`'s real key), for `destination`.
async fn signed_request(
    server: &TestServer,
    path: &str,
    origin: &str,
    destination: &str,
    key: &Ed25519KeyPair,
) -> (u16, Value) {
    signed_send(
        server,
        reqwest::Method::GET,
        path,
        None,
        origin,
        destination,
        key,
    )
    .await
}

/// Like [`signed_request`], with any method and a JSON body.
async fn signed_send(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
    origin: &str,
    destination: &str,
    key: &Ed25519KeyPair,
) -> (u16, Value) {
    let bytes = body
        .map(|b| serde_json::to_vec(b).expect("json"))
        .unwrap_or_default();
    let mut request = ruma::exports::http::Request::new(bytes.clone());
    *request.method_mut() = method.as_str().parse().expect("method");
    *request.uri_mut() = path.parse().expect("path");
    let origin: OwnedServerName = origin.try_into().expect("origin");
    let destination: OwnedServerName = destination.try_into().expect("destination");
    let header = XMatrix::try_from_http_request(
        &request,
        ruma::api::federation::authentication::ServerSignaturesInput::new(origin, destination, key),
    )
    .expect("signed");
    let header = ruma::exports::http::HeaderValue::from(&header);
    let mut outgoing = server
        .http
        .request(method, server.url(path))
        .header("authorization", header.to_str().expect("ascii"));
    if body.is_some() {
        outgoing = outgoing
            .header("content-type", "application/json")
            .body(bytes);
    }
    let response = outgoing.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn key_pair() -> Ed25519KeyPair {
    let der = Ed25519KeyPair::generate();
    Ed25519KeyPair::from_der(&der, "forged".to_owned()).expect("key pair")
}

async fn two_matrixon_servers_federate_keys_profiles_and_queries(backend: Backend) {
    let a = federating_server(&backend).await;
    let b = federating_server(&backend).await;
    let (a_name, b_name) = (server_name(&a), server_name(&b));
    let (alice, alice_token) = user(&a, "alice", "Alice on A").await;
    let (bob, bob_token) = user(&b, "bob", "Bob on B").await;

    // Each server's key document, over its TLS listener, signed by the key it lists.
    let https = https_client();
    let keys: Value = https
        .get(format!("https://{a_name}/_matrix/key/v2/server"))
        .send()
        .await
        .expect("keys over TLS")
        .json()
        .await
        .expect("json");
    assert_eq!(keys["server_name"], a_name.as_str());
    assert_self_signed(&keys, a_name.as_str());
    let version: Value = https
        .get(format!("https://{b_name}/_matrix/federation/v1/version"))
        .send()
        .await
        .expect("version over TLS")
        .json()
        .await
        .expect("json");
    assert_eq!(version["server"]["name"], "Matrixon");

    // Profiles both ways: each request signed by its origin, checked with a fetched key.
    let (status, profile) = a
        .get(
            &format!("/_matrix/client/v3/profile/{bob}"),
            Some(&alice_token),
        )
        .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["displayname"], "Bob on B");
    let (status, profile) = b
        .get(
            &format!("/_matrix/client/v3/profile/{alice}/displayname"),
            Some(&bob_token),
        )
        .await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["displayname"], "Alice on A");
    let (status, missing) = a
        .get(
            &format!("/_matrix/client/v3/profile/@nobody:{b_name}"),
            Some(&alice_token),
        )
        .await;
    assert_eq!(
        (status, &missing["errcode"]),
        (404, &json!("M_NOT_FOUND")),
        "{missing}"
    );

    // End-to-end keys of a remote user: answered through federation, no failures; an
    // unreachable server is listed in failures, not a 5xx.
    let query = json!({ "device_keys": { bob.clone(): [], "@x:127.0.0.1:1": [] } });
    let (status, answer) = a
        .post_json("/_matrix/client/v3/keys/query", Some(&alice_token), &query)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["device_keys"][&bob].is_object(), "{answer}");
    assert!(
        answer["failures"].get(b_name.as_str()).is_none(),
        "{answer}"
    );
    assert!(
        answer["failures"]["127.0.0.1:1"]["status"].is_number(),
        "{answer}"
    );
    let claim = json!({ "one_time_keys": { bob.clone(): { "NODEVICE": "signed_curve25519" } } });
    let (status, claimed) = a
        .post_json("/_matrix/client/v3/keys/claim", Some(&alice_token), &claim)
        .await;
    assert_eq!(status, 200, "{claimed}");
    assert!(
        claimed["failures"].as_object().is_none_or(|f| f.is_empty()),
        "{claimed}"
    );

    // A notary answer: B's keys as A fetched them, signed by B and by A.
    let (status, notarised) = a
        .post_json(
            "/_matrix/key/v2/query",
            None,
            &json!({ "server_keys": { b_name.as_str(): {} } }),
        )
        .await;
    assert_eq!(status, 200, "{notarised}");
    let document = &notarised["server_keys"][0];
    assert_eq!(document["server_name"], b_name.as_str(), "{notarised}");
    assert_self_signed(document, b_name.as_str());
    assert!(
        document["signatures"][a_name.as_str()].is_object(),
        "{notarised}"
    );

    // Requests that are unsigned, signed with a key that is not the origin's, or signed for
    // another destination: 401, nothing answered.
    let path = format!("/_matrix/federation/v1/query/profile?user_id={alice}");
    let (status, body) = a.get(&path, None).await;
    assert_eq!(
        (status, &body["errcode"]),
        (401, &json!("M_UNAUTHORIZED")),
        "{body}"
    );
    let forged = key_pair();
    let (status, body) = signed_request(&a, &path, b_name.as_str(), a_name.as_str(), &forged).await;
    assert_eq!(
        (status, &body["errcode"]),
        (401, &json!("M_UNAUTHORIZED")),
        "{body}"
    );
    assert!(body.get("displayname").is_none());
    let (status, body) =
        signed_request(&a, &path, b_name.as_str(), "elsewhere.example", &forged).await;
    assert_eq!(
        (status, &body["errcode"]),
        (401, &json!("M_UNAUTHORIZED")),
        "{body}"
    );
    // An origin that does not exist cannot have its key fetched.
    let (status, body) = signed_request(&a, &path, "127.0.0.1:1", a_name.as_str(), &forged).await;
    assert_eq!(
        (status, &body["errcode"]),
        (401, &json!("M_UNAUTHORIZED")),
        "{body}"
    );
    // A malformed header.
    let response = a
        .http
        .get(a.url(&path))
        .header("authorization", "X-Matrix origin=")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 401);

    a.finish().await;
    b.finish().await;
}

both_backends!(
    two_matrixon_servers_federate_keys_profiles_and_queries,
    federation_is_off_unless_enabled,
    bad_events_over_federation_are_refused_and_not_stored,
    a_gap_before_a_pushed_event_is_filled,
    history_before_a_join_is_backfilled_from_synapse,
    after_a_partition_both_sides_resolve_the_same_state,
);

async fn federation_is_off_unless_enabled(backend: Backend) {
    let server = TestServer::start(&backend).await;
    let (status, body) = server.get("/_matrix/key/v2/server", None).await;
    assert_eq!(
        (status, &body["errcode"]),
        (404, &json!("M_UNRECOGNIZED")),
        "{body}"
    );
    let (user_id, token) = user(&server, "carol", "Carol").await;
    let (status, body) = server
        .get(
            "/_matrix/client/v3/profile/@dave:elsewhere.example",
            Some(&token),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let query = json!({ "device_keys": { "@dave:elsewhere.example": [] } });
    let (status, answer) = server
        .post_json("/_matrix/client/v3/keys/query", Some(&token), &query)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["failures"]["elsewhere.example"]["status"], 403,
        "{answer}"
    );
    let _ = user_id;
    server.finish().await;
}

/// Matrixon and Synapse (from PyPI) fetch each other's keys and answer each other's signed
/// queries: profiles and end-to-end keys, both ways; matrix-sdk reads a Synapse profile
/// through Matrixon.
#[tokio::test(flavor = "multi_thread")]
async fn matrixon_and_synapse_query_each_other() {
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    let matrixon = federating_server(&Backend::Sqlite).await;
    let m_name = server_name(&matrixon);
    let (alice, alice_token) = user(&matrixon, "alice", "Alice on Matrixon").await;
    let (bob, bob_token) = synapse.register("bob").await;
    let (status, body) = synapse
        .request(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/profile/{bob}/displayname"),
            Some(&bob_token),
            Some(&json!({ "displayname": "Bob on Synapse" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Synapse asks Matrixon (Matrixon checks Synapse's signature with Synapse's fetched key).
    let (status, profile) = synapse
        .request(
            reqwest::Method::GET,
            &format!("/_matrix/client/v3/profile/{alice}"),
            Some(&bob_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{profile}\n{}", synapse.log_tail());
    assert_eq!(profile["displayname"], "Alice on Matrixon");

    // Matrixon asks Synapse (Synapse checks Matrixon's signature with Matrixon's key).
    let (status, profile) = matrixon
        .get(
            &format!("/_matrix/client/v3/profile/{bob}"),
            Some(&alice_token),
        )
        .await;
    assert_eq!(status, 200, "{profile}\n{}", synapse.log_tail());
    assert_eq!(profile["displayname"], "Bob on Synapse");

    // matrix-sdk, logged in on Matrixon, reads the Synapse user's profile.
    let client = matrixon.client().await;
    client
        .matrix_auth()
        .login_username("alice", "a long password")
        .send()
        .await
        .expect("matrix-sdk login");
    let bob_id = ruma::UserId::parse(bob.as_str()).expect("user id");
    let fetched = client
        .account()
        .fetch_user_profile_of(&bob_id)
        .await
        .expect("matrix-sdk reads a remote profile");
    assert_eq!(
        fetched.get("displayname").and_then(|v| v.as_str()),
        Some("Bob on Synapse")
    );

    // End-to-end key queries both ways, without failures.
    let (status, answer) = synapse
        .request(
            reqwest::Method::POST,
            "/_matrix/client/v3/keys/query",
            Some(&bob_token),
            Some(&json!({ "device_keys": { alice.clone(): [] } })),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["failures"].as_object().is_none_or(|f| f.is_empty()),
        "{answer}"
    );
    let (status, answer) = matrixon
        .post_json(
            "/_matrix/client/v3/keys/query",
            Some(&alice_token),
            &json!({ "device_keys": { bob.clone(): [] } }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["failures"]
            .get(synapse.server_name.as_str())
            .is_none(),
        "{answer}"
    );

    // Matrixon as a notary for Synapse's keys.
    let (status, notarised) = matrixon
        .post_json(
            "/_matrix/key/v2/query",
            None,
            &json!({ "server_keys": { synapse.server_name.as_str(): {} } }),
        )
        .await;
    assert_eq!(status, 200, "{notarised}");
    assert_self_signed(&notarised["server_keys"][0], &synapse.server_name);
    assert!(notarised["server_keys"][0]["signatures"][m_name.as_str()].is_object());
    let _ = ServerName::parse(synapse.server_name.as_str()).expect("Synapse's name parses");
    matrixon.finish().await;
}

/// Polls `/messages` (newest first) until a message with `body` shows up; the events read.
async fn wait_for_message(
    mut read: impl AsyncFnMut() -> (u16, Value),
    body: &str,
) -> Option<Value> {
    for _ in 0..100 {
        let (status, page) = read().await;
        if status == 200
            && let Some(found) = page["chunk"]
                .as_array()
                .and_then(|events| events.iter().find(|e| e["content"]["body"] == body))
        {
            return Some(found.clone());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    None
}

/// A Synapse user joins a Matrixon room by its alias (directory query, make_join, send_join),
/// then messages go both ways through transactions.
#[tokio::test(flavor = "multi_thread")]
async fn a_synapse_user_joins_a_matrixon_room_and_they_talk() {
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    let matrixon = federating_server(&Backend::Sqlite).await;
    let m_name = server_name(&matrixon);
    let (_alice, alice_token) = user(&matrixon, "alice", "Alice on Matrixon").await;
    let (bob, bob_token) = synapse.register("bob").await;
    let (status, created) = matrixon
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice_token),
            &json!({ "preset": "public_chat", "room_alias_name": "lobby", "name": "Lobby" }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let room_id = created["room_id"].as_str().expect("room id").to_owned();
    let alias = format!("#lobby:{m_name}");
    // History from before the join, which Synapse fetches by backfill when bob scrolls back.
    for n in 0..30 {
        let (status, _) = matrixon
            .put_json(
                &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/early{n}"),
                Some(&alice_token),
                &json!({ "msgtype": "m.text", "body": format!("early {n}") }),
            )
            .await;
        assert_eq!(status, 200);
    }

    let (status, joined) = synapse
        .request(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/join/{}", alias.replace('#', "%23")),
            Some(&bob_token),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 200, "{joined}\n{}", synapse.log_tail());
    assert_eq!(joined["room_id"], room_id.as_str());
    let (status, members) = matrixon
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/joined_members"),
            Some(&alice_token),
        )
        .await;
    assert_eq!(status, 200, "{members}");
    assert!(members["joined"].get(&bob).is_some(), "{members}");

    // Synapse → Matrixon.
    let (status, sent) = synapse
        .request(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/b1"),
            Some(&bob_token),
            Some(&json!({ "msgtype": "m.text", "body": "hello from Synapse" })),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let messages = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=20");
    let seen = wait_for_message(
        async || matrixon.get(&messages, Some(&alice_token)).await,
        "hello from Synapse",
    )
    .await;
    assert!(
        seen.is_some_and(|e| e["sender"] == bob.as_str()),
        "{}",
        synapse.log_tail()
    );

    // Matrixon → Synapse.
    let (status, sent) = matrixon
        .put_json(
            &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/a1"),
            Some(&alice_token),
            &json!({ "msgtype": "m.text", "body": "hello from Matrixon" }),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let seen = wait_for_message(
        async || {
            synapse
                .request(reqwest::Method::GET, &messages, Some(&bob_token), None)
                .await
        },
        "hello from Matrixon",
    )
    .await;
    assert!(seen.is_some(), "{}", synapse.log_tail());
    let alice_message = seen
        .and_then(|e| e["event_id"].as_str().map(str::to_owned))
        .expect("id");
    let history = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=100");
    let earliest = wait_for_message(
        async || {
            synapse
                .request(reqwest::Method::GET, &history, Some(&bob_token), None)
                .await
        },
        "early 0",
    )
    .await;
    assert!(
        earliest.is_some(),
        "Synapse backfilled the history\n{}",
        synapse.log_tail()
    );

    // Typing and read receipts, both ways, as EDUs.
    let (status, _) = synapse
        .request(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room_id}/typing/{bob}"),
            Some(&bob_token),
            Some(&json!({ "typing": true, "timeout": 20000 })),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = synapse
        .request(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{alice_message}"),
            Some(&bob_token),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 200);
    let ephemeral_has = |sync: &Value, kind: &str, user: &str| {
        sync["rooms"]["join"][&room_id]["ephemeral"]["events"]
            .as_array()
            .is_some_and(|events| {
                events
                    .iter()
                    .any(|e| e["type"] == kind && e.to_string().contains(user))
            })
    };
    let (mut typing_seen, mut receipt_seen) = (false, false);
    for _ in 0..50 {
        let (_, sync) = matrixon
            .get("/_matrix/client/v3/sync?timeout=0", Some(&alice_token))
            .await;
        typing_seen |= ephemeral_has(&sync, "m.typing", &bob);
        receipt_seen |= ephemeral_has(&sync, "m.receipt", &bob);
        if typing_seen && receipt_seen {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        typing_seen && receipt_seen,
        "typing {typing_seen}, receipt {receipt_seen}\n{}",
        synapse.log_tail()
    );

    let alice = matrixon
        .get("/_matrix/client/v3/account/whoami", Some(&alice_token))
        .await
        .1["user_id"]
        .as_str()
        .expect("alice")
        .to_owned();
    let bob_message = wait_for_message(
        async || matrixon.get(&messages, Some(&alice_token)).await,
        "hello from Synapse",
    )
    .await
    .and_then(|e| e["event_id"].as_str().map(str::to_owned))
    .expect("bob's message");
    let (status, _) = matrixon
        .put_json(
            &format!("/_matrix/client/v3/rooms/{room_id}/typing/{alice}"),
            Some(&alice_token),
            &json!({ "typing": true, "timeout": 20000 }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = matrixon
        .post_json(
            &format!("/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{bob_message}"),
            Some(&alice_token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (mut typing_seen, mut receipt_seen) = (false, false);
    for _ in 0..50 {
        let (_, sync) = synapse
            .request(
                reqwest::Method::GET,
                "/_matrix/client/v3/sync?timeout=0",
                Some(&bob_token),
                None,
            )
            .await;
        typing_seen |= ephemeral_has(&sync, "m.typing", &alice);
        receipt_seen |= ephemeral_has(&sync, "m.receipt", &alice);
        if typing_seen && receipt_seen {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        typing_seen && receipt_seen,
        "on Synapse: typing {typing_seen}, receipt {receipt_seen}\n{}",
        synapse.log_tail()
    );
    matrixon.finish().await;
}

/// `object` hashed and signed as `server` with `key`; its event id (room version 11).
fn signed_event(object: &mut CanonicalJsonObject, server: &str, key: &Ed25519KeyPair) -> String {
    let rules = ruma::room_version_rules::RoomVersionRules::V11;
    object.remove("signatures");
    object.remove("hashes");
    ruma::signatures::hash_and_sign_event(server, key, object, &rules.redaction).expect("signed");
    format!(
        "${}",
        ruma::signatures::reference_hash(object, &rules).expect("hash")
    )
}

/// Server B (a real Matrixon, whose key A fetches) pushes events into a room on A: a proper
/// join and message are taken; a forged signature, a third server's unsigned user, an unknown
/// room, a tampered content (kept redacted), an oversized or misattributed transaction are
/// refused, and nothing refused is stored.
async fn bad_events_over_federation_are_refused_and_not_stored(backend: Backend) {
    let a = federating_server(&backend).await;
    let b = federating_server(&backend).await;
    let (a_name, b_name) = (server_name(&a).to_string(), server_name(&b).to_string());
    let b_key = &b.server.as_ref().expect("running").services.signing_key;
    let (_, alice_token) = user(&a, "alice", "Alice").await;
    let (status, created) = a
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice_token),
            &json!({ "preset": "public_chat", "room_version": "11" }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let room_id = created["room_id"].as_str().expect("room").to_owned();
    let mallory = format!("@mallory:{b_name}");
    let as_b = async |path: &str| signed_request(&a, path, &b_name, &a_name, b_key).await;
    let send_as_b = async |method: reqwest::Method, path: &str, body: &Value| {
        signed_send(&a, method, path, Some(body), &b_name, &a_name, b_key).await
    };

    // Not in the room yet: its history is not B's to read.
    let create_id = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/state"),
            Some(&alice_token),
        )
        .await
        .1
        .as_array()
        .and_then(|events| events.iter().find(|e| e["type"] == "m.room.create"))
        .and_then(|e| e["event_id"].as_str())
        .expect("create event")
        .to_owned();
    let (status, _) = as_b(&format!("/_matrix/federation/v1/event/{create_id}")).await;
    assert_eq!(status, 403);

    // A join as B would make it: template from make_join, signed by B.
    let (status, template) = as_b(&format!(
        "/_matrix/federation/v1/make_join/{room_id}/{mallory}?ver=10&ver=11"
    ))
    .await;
    assert_eq!(status, 200, "{template}");
    assert_eq!(template["room_version"], "11");
    let mut join: CanonicalJsonObject =
        serde_json::from_value(template["event"].clone()).expect("template");
    join.insert(
        "origin_server_ts".to_owned(),
        ruma::CanonicalJsonValue::Integer(ruma::Int::try_from(now_ms()).expect("now")),
    );
    let join_id = signed_event(&mut join, &b_name, b_key);
    // Not B's users: make_join refuses.
    let (status, _) = as_b(&format!(
        "/_matrix/federation/v1/make_join/{room_id}/@eve:elsewhere.example?ver=11"
    ))
    .await;
    assert_eq!(status, 403);
    // Leaves and knocks refuse what is not theirs, and change nothing.
    let (status, _) = as_b(&format!(
        "/_matrix/federation/v1/make_leave/{room_id}/@eve:elsewhere.example"
    ))
    .await;
    assert_eq!(status, 403, "not B's user");
    let (status, body) = as_b(&format!(
        "/_matrix/federation/v1/make_knock/{room_id}/{mallory}?ver=1&ver=2"
    ))
    .await;
    assert_eq!(
        (status, &body["errcode"]),
        (400, &json!("M_INCOMPATIBLE_ROOM_VERSION"))
    );
    let (status, _) = as_b(&format!(
        "/_matrix/federation/v1/make_knock/{room_id}/{mallory}?ver=11"
    ))
    .await;
    assert_eq!(status, 403, "a public room takes joins, not knocks");
    let (status, body) = send_as_b(
        reqwest::Method::PUT,
        &format!("/_matrix/federation/v2/send_leave/{room_id}/{join_id}"),
        &serde_json::to_value(&join).expect("json"),
    )
    .await;
    assert_eq!(status, 400, "a join is no leave: {body}");
    let (status, body) = send_as_b(
        reqwest::Method::PUT,
        &format!("/_matrix/federation/v1/send_knock/{room_id}/{join_id}"),
        &serde_json::to_value(&join).expect("json"),
    )
    .await;
    assert_eq!(status, 400, "a join is no knock: {body}");
    let (_, member) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{mallory}"),
            Some(&alice_token),
        )
        .await;
    assert_eq!(member["errcode"], "M_NOT_FOUND", "{member}");
    let (status, answer) = send_as_b(
        reqwest::Method::PUT,
        &format!("/_matrix/federation/v2/send_join/{room_id}/{join_id}"),
        &serde_json::to_value(&join).expect("json"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["auth_chain"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{answer}"
    );
    assert!(
        answer["state"].as_array().is_some_and(|s| s.len() >= 4),
        "{answer}"
    );

    // In the room now: single events, the state at an event, auth chains, history.
    let (status, event) = as_b(&format!("/_matrix/federation/v1/event/{create_id}")).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["pdus"][0]["type"], "m.room.create", "{event}");
    let (status, ids) = as_b(&format!(
        "/_matrix/federation/v1/state_ids/{room_id}?event_id={join_id}"
    ))
    .await;
    assert_eq!(status, 200, "{ids}");
    assert!(
        ids["pdu_ids"]
            .as_array()
            .is_some_and(|p| p.iter().any(|id| id == &json!(create_id))),
        "{ids}"
    );
    let (status, auth) = as_b(&format!(
        "/_matrix/federation/v1/event_auth/{room_id}/{join_id}"
    ))
    .await;
    assert_eq!(status, 200, "{auth}");
    assert!(
        auth["auth_chain"].as_array().is_some_and(|c| !c.is_empty()),
        "{auth}"
    );
    let (status, back) = as_b(&format!(
        "/_matrix/federation/v1/backfill/{room_id}?v={join_id}&limit=3"
    ))
    .await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["pdus"].as_array().map(Vec::len), Some(3), "{back}");
    let (status, missing) = send_as_b(
        reqwest::Method::POST,
        &format!("/_matrix/federation/v1/get_missing_events/{room_id}"),
        &json!({ "earliest_events": [create_id], "latest_events": [join_id], "limit": 5 }),
    )
    .await;
    assert_eq!(status, 200, "{missing}");
    assert!(
        missing["events"]
            .as_array()
            .is_some_and(|e| !e.is_empty() && e.len() <= 5),
        "{missing}"
    );

    // Messages from mallory, built on the join.
    let (_, state) = a
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/state"),
            Some(&alice_token),
        )
        .await;
    let id_of = |kind: &str, key: &str| {
        state
            .as_array()
            .and_then(|events| {
                events
                    .iter()
                    .find(|e| e["type"] == kind && e["state_key"] == key)
            })
            .and_then(|e| e["event_id"].as_str())
            .expect("state event")
            .to_owned()
    };
    let auth = json!([
        id_of("m.room.create", ""),
        id_of("m.room.power_levels", ""),
        join_id
    ]);
    let message = |body: &str, sender: &str| -> CanonicalJsonObject {
        serde_json::from_value(json!({
            "type": "m.room.message", "room_id": room_id, "sender": sender,
            "content": { "msgtype": "m.text", "body": body },
            "origin_server_ts": now_ms(),
            "depth": 100, "prev_events": [join_id], "auth_events": auth,
        }))
        .expect("event")
    };
    let mut good = message("a proper message", &mallory);
    let good_id = signed_event(&mut good, &b_name, b_key);
    let forged_key = key_pair();
    let mut forged = message("forged", &mallory);
    let forged_id = signed_event(&mut forged, &b_name, &forged_key);
    let mut third = message("from a third server", "@eve:elsewhere.example");
    let third_id = signed_event(&mut third, &b_name, b_key);
    let mut tampered = message("signed text", &mallory);
    let tampered_id = signed_event(&mut tampered, &b_name, b_key);
    tampered.insert(
        "content".to_owned(),
        serde_json::from_value(json!({ "msgtype": "m.text", "body": "tampered text" }))
            .expect("content"),
    );
    let mut elsewhere = message("unknown room", &mallory);
    elsewhere.insert(
        "room_id".to_owned(),
        ruma::CanonicalJsonValue::String(format!("!nowhere:{a_name}")),
    );
    let elsewhere_id = signed_event(&mut elsewhere, &b_name, b_key);
    let pdus: Vec<Value> = [&good, &forged, &third, &tampered, &elsewhere]
        .iter()
        .map(|e| serde_json::to_value(e).expect("json"))
        .collect();
    let transaction = json!({ "origin": b_name, "origin_server_ts": 1, "pdus": pdus, "edus": [] });
    let (status, results) = send_as_b(
        reqwest::Method::PUT,
        "/_matrix/federation/v1/send/t1",
        &transaction,
    )
    .await;
    assert_eq!(status, 200, "{results}");
    let outcome = |id: &str| results["pdus"][id].clone();
    assert_eq!(outcome(&good_id), json!({}), "{results}");
    assert_eq!(outcome(&tampered_id), json!({}), "{results}");
    for refused in [&forged_id, &third_id] {
        assert!(
            outcome(refused)["error"].is_string(),
            "{refused}: {results}"
        );
    }
    // (An event of an unknown room has no version to compute its id by: dropped.)
    assert_ne!(outcome(&elsewhere_id), json!({}), "{results}");
    let event = |id: String| {
        let a = &a;
        let token = alice_token.clone();
        let room_id = room_id.clone();
        async move {
            a.get(
                &format!("/_matrix/client/v3/rooms/{room_id}/event/{id}"),
                Some(&token),
            )
            .await
        }
    };
    let (status, stored) = event(good_id.clone()).await;
    assert_eq!(
        (status, &stored["content"]["body"]),
        (200, &json!("a proper message")),
        "{stored}"
    );
    let (status, stored) = event(tampered_id.clone()).await;
    assert_eq!(status, 200, "{stored}");
    assert!(
        stored["content"].get("body").is_none(),
        "kept redacted: {stored}"
    );
    for refused in [forged_id, third_id] {
        let (status, _) = event(refused).await;
        assert_eq!(status, 404, "a refused event is not stored");
    }

    // Whole transactions refused: too many PDUs, or an origin other than the signer.
    let many: Vec<Value> = (0..51)
        .map(|_| serde_json::to_value(&good).expect("json"))
        .collect();
    let (status, body) = send_as_b(
        reqwest::Method::PUT,
        "/_matrix/federation/v1/send/t2",
        &json!({ "origin": b_name, "origin_server_ts": 1, "pdus": many }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = send_as_b(
        reqwest::Method::PUT,
        "/_matrix/federation/v1/send/t3",
        &json!({ "origin": "elsewhere.example", "origin_server_ts": 1, "pdus": [] }),
    )
    .await;
    assert_eq!(status, 403, "{body}");

    // The room's first event by time, for a server in it.
    let (status, found) = as_b(&format!(
        "/_matrix/federation/v1/timestamp_to_event/{room_id}?ts=0&dir=f"
    ))
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["event_id"], create_id.as_str(), "{found}");

    // A server ACL that shuts out IP-literal servers: B's requests about the room are 403
    // and its events are refused, though its user is still a member.
    let (status, body) = as_b(&format!("/_matrix/federation/v1/event/{good_id}")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = a
        .put_json(
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.server_acl/"),
            Some(&alice_token),
            &json!({ "allow": ["*"], "deny": [], "allow_ip_literals": false }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = as_b(&format!("/_matrix/federation/v1/event/{good_id}")).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = as_b(&format!(
        "/_matrix/federation/v1/make_join/{room_id}/@trudy:{b_name}?ver=11"
    ))
    .await;
    assert_eq!(status, 403, "{body}");
    let mut after = message("after the ACL", &mallory);
    let after_id = signed_event(&mut after, &b_name, b_key);
    let (status, results) = send_as_b(
        reqwest::Method::PUT,
        "/_matrix/federation/v1/send/t4",
        &json!({ "origin": b_name, "origin_server_ts": 1, "pdus": [after], "edus": [] }),
    )
    .await;
    assert_eq!(status, 200, "{results}");
    assert!(
        results["pdus"][&after_id]["error"]
            .as_str()
            .is_some_and(|e| e.contains("server ACL")),
        "{results}"
    );
    let (status, _) = event(after_id).await;
    assert_eq!(status, 404, "a refused event is not stored");
    a.finish().await;
    b.finish().await;
}

fn now_ms() -> i64 {
    use matrixon::clock::Clock;
    matrixon::clock::SystemClock.now_ms()
}

/// A Matrixon user joins rooms that live on Synapse — a version 12 room by alias through
/// matrix-sdk, a version 10 room by id with `via` over raw HTTP — and messages go both ways.
#[tokio::test(flavor = "multi_thread")]
async fn a_matrixon_user_joins_synapse_rooms_and_they_talk() {
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    let matrixon = federating_server(&Backend::Sqlite).await;
    let (alice, alice_token) = user(&matrixon, "alice", "Alice on Matrixon").await;
    let (bob, bob_token) = synapse.register("bob").await;
    let create = async |body: Value| synapse.create_room(&bob_token, &body).await;
    let v12 = create(
        json!({ "preset": "public_chat", "room_alias_name": "synroom", "name": "On Synapse" }),
    )
    .await;
    let v10 = create(json!({ "preset": "public_chat", "room_version": "10" })).await;
    let (status, _) = synapse
        .request(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/rooms/{v12}/send/m.room.message/before"),
            Some(&bob_token),
            Some(&json!({ "msgtype": "m.text", "body": "said before the join" })),
        )
        .await;
    assert_eq!(status, 200);

    // By alias, through matrix-sdk (the alias is resolved over federation).
    let client = matrixon.client().await;
    client
        .matrix_auth()
        .login_username("alice", "a long password")
        .send()
        .await
        .expect("matrix-sdk login");
    let alias =
        ruma::RoomOrAliasId::parse(format!("#synroom:{}", synapse.server_name)).expect("alias");
    let room = client
        .join_room_by_id_or_alias(&alias, &[])
        .await
        .expect("matrix-sdk joins a room on Synapse");
    assert_eq!(room.room_id().as_str(), v12);

    // By id with via, over raw HTTP.
    let (status, joined) = matrixon
        .post_json(
            &format!("/_matrix/client/v3/join/{v10}?via={}", synapse.server_name),
            Some(&alice_token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{joined}");

    for room_id in [&v12, &v10] {
        let (status, members) = synapse
            .request(
                reqwest::Method::GET,
                &format!("/_matrix/client/v3/rooms/{room_id}/joined_members"),
                Some(&bob_token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{members}");
        assert!(
            members["joined"].get(&alice).is_some(),
            "{members}\n{}",
            synapse.log_tail()
        );
        let (status, state) = matrixon
            .get(
                &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.create"),
                Some(&alice_token),
            )
            .await;
        assert_eq!(status, 200, "the room's state is here: {state}");

        let body = format!("alice in {room_id}");
        let (status, sent) = matrixon
            .put_json(
                &format!(
                    "/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{}",
                    room_id.len()
                ),
                Some(&alice_token),
                &json!({ "msgtype": "m.text", "body": body }),
            )
            .await;
        assert_eq!(status, 200, "{sent}");
        let messages = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=20");
        let seen = wait_for_message(
            async || {
                synapse
                    .request(reqwest::Method::GET, &messages, Some(&bob_token), None)
                    .await
            },
            &body,
        )
        .await;
        assert!(
            seen.is_some(),
            "Synapse got alice's message\n{}",
            synapse.log_tail()
        );

        let reply = format!("bob in {room_id}");
        let (status, _) = synapse
            .request(
                reqwest::Method::PUT,
                &format!(
                    "/_matrix/client/v3/rooms/{room_id}/send/m.room.message/r{}",
                    room_id.len()
                ),
                Some(&bob_token),
                Some(&json!({ "msgtype": "m.text", "body": reply })),
            )
            .await;
        assert_eq!(status, 200);
        let seen = wait_for_message(
            async || matrixon.get(&messages, Some(&alice_token)).await,
            &reply,
        )
        .await;
        assert!(
            seen.is_some_and(|e| e["sender"] == bob.as_str()),
            "{}",
            synapse.log_tail()
        );
    }
    matrixon.finish().await;
}

/// A room's history from before a Matrixon user joined it on Synapse: 30 messages and a
/// name change, fetched with `/backfill` as matrix-sdk and matrix-nio scroll back, each
/// event once, in order, down to the room's create event.
async fn history_before_a_join_is_backfilled_from_synapse(backend: Backend) {
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    let matrixon = federating_server(&backend).await;
    let (_, alice_token) = user(&matrixon, "alice", "Alice on Matrixon").await;
    user(&matrixon, "nina", "Nina on Matrixon").await;
    let (_, bob_token) = synapse.register("bob").await;
    let bob = |method: reqwest::Method, path: String, body: Value| {
        let synapse = &synapse;
        let token = bob_token.clone();
        async move {
            let (status, answer) = synapse
                .request(method, &path, Some(&token), Some(&body))
                .await;
            assert_eq!(status, 200, "{path}: {answer}");
            answer
        }
    };
    let mut rooms = Vec::new();
    for version in ["12", "10"] {
        let created = bob(
            reqwest::Method::POST,
            "/_matrix/client/v3/createRoom".to_owned(),
            json!({ "preset": "public_chat", "room_version": version }),
        )
        .await;
        let room_id = created["room_id"].as_str().expect("room id").to_owned();
        for i in 0..30 {
            if i == 15 {
                bob(
                    reqwest::Method::PUT,
                    format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.name/"),
                    json!({ "name": "Renamed halfway" }),
                )
                .await;
            }
            bob(
                reqwest::Method::PUT,
                format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/h{i}"),
                json!({ "msgtype": "m.text", "body": format!("history {i}") }),
            )
            .await;
        }
        rooms.push(room_id);
    }

    // matrix-sdk joins the first room (version 12: its id names no server, so through
    // Synapse) and scrolls back to its start.
    let client = matrixon.client().await;
    client
        .matrix_auth()
        .login_username("alice", "a long password")
        .send()
        .await
        .expect("matrix-sdk login");
    let room_id = ruma::OwnedRoomId::try_from(rooms[0].as_str()).expect("room id");
    client
        .join_room_by_id_or_alias(
            <&ruma::RoomOrAliasId>::from(&*room_id),
            &[OwnedServerName::try_from(synapse.server_name.as_str()).expect("server name")],
        )
        .await
        .expect("matrix-sdk joins the room on Synapse");
    let bodies = crate::rooms::history(&client, &room_id).await;
    let wanted: Vec<String> = (0..30).map(|i| format!("history {i}")).collect();
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b.starts_with("history "))
            .cloned()
            .collect::<Vec<_>>(),
        wanted,
        "matrix-sdk scrolled back through {bodies:?}\n{}",
        synapse.log_tail()
    );

    // The whole history as raw pages: each event once, the join after all of it, the name
    // change between messages 14 and 15, the create event last.
    let mut seen: Vec<Value> = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..30 {
        let path = match &from {
            Some(from) => {
                format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=9&from={from}")
            }
            None => format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=9"),
        };
        let (status, page) = matrixon.get(&path, Some(&alice_token)).await;
        assert_eq!(status, 200, "{page}");
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        let end = page["end"].as_str().map(str::to_owned);
        if chunk.is_empty() || end.is_none() {
            seen.extend(chunk);
            break;
        }
        seen.extend(chunk);
        from = end;
    }
    let ids: Vec<&str> = seen.iter().filter_map(|e| e["event_id"].as_str()).collect();
    let unique: std::collections::HashSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an event came twice: {ids:?}");
    let position = |pred: &dyn Fn(&Value) -> bool| {
        seen.iter()
            .position(pred)
            .unwrap_or_else(|| panic!("missing from {seen:#?}"))
    };
    let join = position(&|e| {
        e["type"] == "m.room.member"
            && e["content"]["membership"] == "join"
            && e["sender"]
                .as_str()
                .is_some_and(|s| s.starts_with("@alice:"))
    });
    let renamed = position(&|e| e["type"] == "m.room.name");
    let fourteen = position(&|e| e["content"]["body"] == "history 14");
    let fifteen = position(&|e| e["content"]["body"] == "history 15");
    let first = position(&|e| e["content"]["body"] == "history 0");
    assert!(join < fifteen && fifteen < renamed && renamed < fourteen && fourteen < first);
    assert_eq!(
        seen.last().map(|e| e["type"].clone()),
        Some(json!("m.room.create")),
        "{seen:#?}"
    );

    // matrix-nio joins the second room by its id alone and scrolls back the same way.
    let nio = tokio::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tools/venv/bin/python"
    ))
    .arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/clients/nio_history.py"
    ))
    .args([
        matrixon.base.as_str(),
        "nina",
        "a long password",
        rooms[1].as_str(),
        "30",
    ])
    .kill_on_drop(true)
    .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), nio)
        .await
        .expect("nio finished within 120 s")
        .expect("nio runs");
    assert!(
        output.status.success(),
        "nio:\n{}\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        synapse.log_tail()
    );
    matrixon.finish().await;
}

/// Bodies of the `m.room.message` events of a `/messages` page, oldest first.
fn bodies_of(page: &Value) -> Vec<String> {
    let mut bodies: Vec<String> = page["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    bodies.reverse();
    bodies
}

/// Each side stopped while the other sends: when it is back, every message arrives, in
/// order (Synapse retries its transaction; Matrixon's outbox survives and is sent whole).
#[tokio::test(flavor = "multi_thread")]
async fn messages_sent_while_a_server_is_down_arrive_after_it_returns() {
    let Some(mut synapse) = Synapse::start().await else {
        return;
    };
    let matrixon = federating_server(&Backend::Sqlite).await;
    let (_, alice_token) = user(&matrixon, "alice", "Alice on Matrixon").await;
    let (_, bob_token) = synapse.register("bob").await;
    let room_id = synapse
        .create_room(&bob_token, &json!({ "preset": "public_chat" }))
        .await;
    join_via(&matrixon, &alice_token, &room_id, &synapse.server_name).await;
    let bob_sends = |i: usize| {
        let synapse = &synapse;
        let token = bob_token.clone();
        let room_id = room_id.clone();
        async move {
            let (status, sent) = synapse
                .request(
                    reqwest::Method::PUT,
                    &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/b{i}"),
                    Some(&token),
                    Some(&json!({ "msgtype": "m.text", "body": format!("from bob {i}") })),
                )
                .await;
            assert_eq!(status, 200, "{sent}");
        }
    };
    bob_sends(0).await;
    let messages = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50");
    assert!(
        wait_for_message(
            async || matrixon.get(&messages, Some(&alice_token)).await,
            "from bob 0"
        )
        .await
        .is_some(),
        "{}",
        synapse.log_tail()
    );

    // Matrixon down while Bob talks.
    let port = server_name(&matrixon).port().expect("a port");
    let db = matrixon.stop().await;
    for i in 1..=6 {
        bob_sends(i).await;
    }
    let mut config = crate::harness::test_config(&db.url);
    federating(&mut config, port);
    let matrixon = TestServer::start_on(db, config).await;
    // Alice speaking makes Synapse try Matrixon again at once (it would within a minute).
    let (status, _) = matrixon
        .put_json(
            &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/back"),
            Some(&alice_token),
            &json!({ "msgtype": "m.text", "body": "alice is back" }),
        )
        .await;
    assert_eq!(status, 200);
    let wanted: Vec<String> = (0..=6).map(|i| format!("from bob {i}")).collect();
    let mut got = Vec::new();
    for _ in 0..150 {
        let (status, page) = matrixon.get(&messages, Some(&alice_token)).await;
        assert_eq!(status, 200, "{page}");
        got = bodies_of(&page);
        got.retain(|b| b.starts_with("from bob"));
        if got == wanted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(got, wanted, "{}", synapse.log_tail());

    // Synapse down while Alice talks: Matrixon keeps the events queued and backs off, and a
    // to-device message for Bob's device (room keys travel so) is kept as well.
    let (_, whoami) = synapse
        .request(
            reqwest::Method::GET,
            "/_matrix/client/v3/account/whoami",
            Some(&bob_token),
            None,
        )
        .await;
    let (bob, bob_device) = (
        whoami["user_id"].as_str().expect("user").to_owned(),
        whoami["device_id"].as_str().expect("device").to_owned(),
    );
    synapse.stop().await;
    let (status, sent) = matrixon
        .put_json(
            "/_matrix/client/v3/sendToDevice/m.test.kept/k1",
            Some(&alice_token),
            &json!({ "messages": { bob.as_str(): { bob_device.as_str(): { "body": "kept for bob" } } } }),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    for i in 0..6 {
        let (status, _) = matrixon
            .put_json(
                &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/a{i}"),
                Some(&alice_token),
                &json!({ "msgtype": "m.text", "body": format!("from alice {i}") }),
            )
            .await;
        assert_eq!(status, 200);
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    synapse.resume().await;
    matrixon.clock.advance(std::time::Duration::from_secs(3600));
    let wanted: Vec<String> = (0..6).map(|i| format!("from alice {i}")).collect();
    for _ in 0..150 {
        let (status, page) = synapse
            .request(reqwest::Method::GET, &messages, Some(&bob_token), None)
            .await;
        assert_eq!(status, 200, "{page}");
        got = bodies_of(&page);
        got.retain(|b| b.starts_with("from alice"));
        if got == wanted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(got, wanted, "{}", synapse.log_tail());
    let mut delivered = false;
    for _ in 0..50 {
        let (_, sync) = synapse
            .request(
                reqwest::Method::GET,
                "/_matrix/client/v3/sync?timeout=0",
                Some(&bob_token),
                None,
            )
            .await;
        if sync["to_device"]["events"]
            .as_array()
            .is_some_and(|events| {
                events
                    .iter()
                    .any(|e| e["content"]["body"] == "kept for bob")
            })
        {
            delivered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        delivered,
        "the to-device message survived Synapse's absence\n{}",
        synapse.log_tail()
    );
    matrixon.finish().await;
}

/// A server that catches up with only a room's latest event (as Synapse does after a long
/// outage, emulated here by dropping all but the last queued event from one Matrixon's
/// outbox): the other fetches what came before with `/get_missing_events`, in order.
async fn a_gap_before_a_pushed_event_is_filled(backend: Backend) {
    let a = federating_server(&backend).await;
    let b = federating_server(&backend).await;
    let (_, alice_token) = user(&a, "alice", "Alice on A").await;
    let (_, bob_token) = user(&b, "bob", "Bob on B").await;
    let (_, created) = a
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice_token),
            &json!({ "preset": "public_chat" }),
        )
        .await;
    let room_id = created["room_id"].as_str().expect("room").to_owned();
    let (status, joined) = b
        .post_json(
            &format!("/_matrix/client/v3/join/{room_id}?via={}", server_name(&a)),
            Some(&bob_token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{joined}");

    let b_name = server_name(&b);
    let b_port = b_name.port().expect("a port");
    let b_db = b.stop().await;
    for i in 0..8 {
        let (status, _) = a
            .put_json(
                &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/g{i}"),
                Some(&alice_token),
                &json!({ "msgtype": "m.text", "body": format!("gap {i}") }),
            )
            .await;
        assert_eq!(status, 200);
    }
    let trim = "DELETE FROM federation_outbox WHERE destination = $1 AND id < \
                (SELECT MAX(id) FROM federation_outbox WHERE destination = $1)";
    let dropped = if a.db.url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&a.db.url)
            .await
            .expect("A's database");
        let done = sqlx::query(trim).bind(b_name.as_str()).execute(&pool).await;
        pool.close().await;
        done.expect("outbox trimmed").rows_affected()
    } else {
        let pool = sqlx::PgPool::connect(&a.db.url)
            .await
            .expect("A's database");
        let done = sqlx::query(trim).bind(b_name.as_str()).execute(&pool).await;
        pool.close().await;
        done.expect("outbox trimmed").rows_affected()
    };
    assert_eq!(dropped, 7, "A had queued every message for B");

    let mut config = crate::harness::test_config(&b_db.url);
    federating(&mut config, b_port);
    let b = TestServer::start_on(b_db, config).await;
    // A backed off from B while it was down; its next attempt is due at once.
    a.clock.advance(std::time::Duration::from_secs(3600));
    let wanted: Vec<String> = (0..8).map(|i| format!("gap {i}")).collect();
    let messages = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50");
    let mut got = Vec::new();
    for _ in 0..100 {
        let (status, page) = b.get(&messages, Some(&bob_token)).await;
        assert_eq!(status, 200, "{page}");
        got = bodies_of(&page);
        if got == wanted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(got, wanted);
    a.finish().await;
    b.finish().await;
}

/// A room's state as `(type, state_key) → event id`, read through the client API.
async fn state_ids(
    read: impl AsyncFnOnce() -> (u16, Value),
) -> std::collections::BTreeMap<(String, String), String> {
    let (status, state) = read().await;
    assert_eq!(status, 200, "{state}");
    state
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                (
                    e["type"].as_str()?.to_owned(),
                    e["state_key"].as_str()?.to_owned(),
                ),
                e["event_id"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// A partition: Synapse and Matrixon each change the power levels while the other is down
/// (Synapse first). Once both are back, each has received the other's change on a fork of
/// the room's history, and state resolution must bring both to the same state — in room
/// versions 11 and 12 (state resolution v2 and v2.1).
async fn after_a_partition_both_sides_resolve_the_same_state(backend: Backend) {
    let Some(mut synapse) = Synapse::start().await else {
        return;
    };
    let matrixon = federating_server(&backend).await;
    let (alice, alice_token) = user(&matrixon, "alice", "Alice on Matrixon").await;
    let (_, bob_token) = synapse.register("bob").await;
    let mut rooms = Vec::new();
    for version in ["11", "12"] {
        let room_id = synapse
            .create_room(
                &bob_token,
                &json!({ "preset": "public_chat", "room_version": version }),
            )
            .await;
        join_via(&matrixon, &alice_token, &room_id, &synapse.server_name).await;
        // Alice an administrator too (in version 12 Bob, the creator, is above all levels).
        let path = format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/");
        let (_, mut levels) = synapse
            .request(reqwest::Method::GET, &path, Some(&bob_token), None)
            .await;
        levels["users"][alice.as_str()] = json!(100);
        let (status, set) = synapse
            .request(reqwest::Method::PUT, &path, Some(&bob_token), Some(&levels))
            .await;
        assert_eq!(status, 200, "{set}");
        let mut seen = false;
        for _ in 0..100 {
            let (_, here) = matrixon.get(&path, Some(&alice_token)).await;
            if here["users"][alice.as_str()] == 100 {
                seen = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(
            seen,
            "Matrixon got the new power levels\n{}",
            synapse.log_tail()
        );
        rooms.push((room_id, path));
    }

    // Matrixon down: Bob raises the level for messages to 20.
    let port = server_name(&matrixon).port().expect("a port");
    let db = matrixon.stop().await;
    for (_, path) in &rooms {
        let (_, mut levels) = synapse
            .request(reqwest::Method::GET, path, Some(&bob_token), None)
            .await;
        levels["events_default"] = json!(20);
        let (status, set) = synapse
            .request(reqwest::Method::PUT, path, Some(&bob_token), Some(&levels))
            .await;
        assert_eq!(status, 200, "{set}");
    }
    // Synapse down, Matrixon back: Alice sets it to 10 (and a topic nobody contests).
    synapse.stop().await;
    let mut config = crate::harness::test_config(&db.url);
    federating(&mut config, port);
    let matrixon = TestServer::start_on(db, config).await;
    for (room_id, path) in &rooms {
        let (_, mut levels) = matrixon.get(path, Some(&alice_token)).await;
        assert_eq!(levels["events_default"], 0, "the partition holds");
        levels["events_default"] = json!(10);
        let (status, set) = matrixon.put_json(path, Some(&alice_token), &levels).await;
        assert_eq!(status, 200, "{set}");
        let (status, set) = matrixon
            .put_json(
                &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.topic/"),
                Some(&alice_token),
                &json!({ "topic": "set during the partition" }),
            )
            .await;
        assert_eq!(status, 200, "{set}");
    }

    // Both back: each side's change reaches the other, and the states agree.
    synapse.resume().await;
    matrixon.clock.advance(std::time::Duration::from_secs(3600));
    for (room_id, path) in &rooms {
        let state = format!("/_matrix/client/v3/rooms/{room_id}/state");
        let mut here = Default::default();
        let mut there = Default::default();
        for _ in 0..150 {
            here = state_ids(async || matrixon.get(&state, Some(&alice_token)).await).await;
            there = state_ids(async || {
                synapse
                    .request(reqwest::Method::GET, &state, Some(&bob_token), None)
                    .await
            })
            .await;
            let topic = ("m.room.topic".to_owned(), String::new());
            let (_, synapse_levels) = synapse
                .request(reqwest::Method::GET, path, Some(&bob_token), None)
                .await;
            let (_, matrixon_levels) = matrixon.get(path, Some(&alice_token)).await;
            if here == there && here.contains_key(&topic) && synapse_levels == matrixon_levels {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert_eq!(
            here,
            there,
            "{room_id}: the two sides disagree\n{}",
            synapse.log_tail()
        );
    }
    matrixon.finish().await;
}

/// Public room directories across servers: Synapse's users browse Matrixon's (when
/// `allow_public_rooms` is on; 403 otherwise), Matrixon's users browse Synapse's through
/// matrix-sdk and raw HTTP, with a search term.
#[tokio::test(flavor = "multi_thread")]
async fn room_directories_are_browsed_across_servers() {
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    let matrixon =
        federating_server_with(&Backend::Sqlite, |c| c.federation.allow_public_rooms = true).await;
    let closed = federating_server(&Backend::Sqlite).await;
    let (_, alice_token) = user(&matrixon, "alice", "Alice on Matrixon").await;
    let (_, bob_token) = synapse.register("bob").await;
    let (status, created) = matrixon
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice_token),
            &json!({ "preset": "public_chat", "visibility": "public", "name": "Matrixon lobby" }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let (status, created) = synapse
        .request(
            reqwest::Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(&bob_token),
            Some(&json!({ "preset": "public_chat", "visibility": "public", "name": "Synapse lobby" })),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let synapse_room = created["room_id"].as_str().expect("room id").to_owned();
    for name in ["Synapse garden", "Synapse attic"] {
        let (status, _) = synapse
            .request(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&bob_token),
                Some(&json!({ "preset": "public_chat", "visibility": "public", "name": name })),
            )
            .await;
        assert_eq!(status, 200);
    }

    // Synapse's user reads Matrixon's directory; a server that does not share it is 403.
    let names = |page: &Value| -> Vec<String> {
        page["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect()
    };
    let (status, page) = synapse
        .request(
            reqwest::Method::GET,
            &format!(
                "/_matrix/client/v3/publicRooms?server={}",
                server_name(&matrixon)
            ),
            Some(&bob_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}\n{}", synapse.log_tail());
    assert_eq!(names(&page), ["Matrixon lobby"], "{page}");
    let (status, page) = synapse
        .request(
            reqwest::Method::GET,
            &format!(
                "/_matrix/client/v3/publicRooms?server={}",
                server_name(&closed)
            ),
            Some(&bob_token),
            None,
        )
        .await;
    assert!(status >= 400, "{status} {page}");

    // Matrixon's user reads Synapse's: matrix-sdk pages through it two at a time...
    let client = matrixon.client().await;
    client
        .matrix_auth()
        .login_username("alice", "a long password")
        .send()
        .await
        .expect("matrix-sdk login");
    let server = OwnedServerName::try_from(synapse.server_name.as_str()).expect("name");
    let mut seen = Vec::new();
    let mut since: Option<String> = None;
    for _ in 0..5 {
        let page = client
            .public_rooms(Some(2), since.as_deref(), Some(&server))
            .await
            .expect("matrix-sdk reads Synapse's directory");
        seen.extend(page.chunk.iter().filter_map(|r| r.name.clone()));
        match page.next_batch {
            Some(next) => since = Some(next),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["Synapse attic", "Synapse garden", "Synapse lobby"]);
    // ...and a search, over raw HTTP.
    let (status, page) = matrixon
        .post_json(
            &format!(
                "/_matrix/client/v3/publicRooms?server={}",
                synapse.server_name
            ),
            Some(&alice_token),
            &json!({ "filter": { "generic_search_term": "lobby" } }),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(names(&page), ["Synapse lobby"], "{page}");
    assert_eq!(page["chunk"][0]["room_id"], synapse_room.as_str());
    matrixon.finish().await;
    closed.finish().await;
}

/// A space whose rooms live on two servers: Matrixon walks into Synapse's rooms through
/// `/_matrix/federation/v1/hierarchy`, and Synapse walks into Matrixon's.
#[tokio::test(flavor = "multi_thread")]
async fn spaces_are_walked_across_servers() {
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    let matrixon = federating_server(&Backend::Sqlite).await;
    let (_, alice_token) = user(&matrixon, "alice", "Alice on Matrixon").await;
    let (_, bob_token) = synapse.register("bob").await;
    let on_synapse = async |body: Value| synapse.create_room(&bob_token, &body).await;
    let on_matrixon = async |body: Value| create_room(&matrixon, &alice_token, &body).await;
    let child = |room: &str, server: &str| json!({ "type": "m.space.child", "state_key": room, "content": { "via": [server] } });
    let synapse_room =
        on_synapse(json!({ "preset": "public_chat", "name": "Synapse child" })).await;
    let synapse_space = on_synapse(json!({
        "preset": "public_chat", "name": "Synapse space",
        "creation_content": { "type": "m.space" },
        "initial_state": [child(&synapse_room, &synapse.server_name)],
    }))
    .await;
    let matrixon_name = server_name(&matrixon).to_string();
    let matrixon_room =
        on_matrixon(json!({ "preset": "public_chat", "name": "Matrixon child" })).await;
    let matrixon_space = on_matrixon(json!({
        "preset": "public_chat", "name": "Matrixon space",
        "creation_content": { "type": "m.space" },
        "initial_state": [
            child(&matrixon_room, &matrixon_name),
            child(&synapse_space, &synapse.server_name),
        ],
    }))
    .await;
    let names = |page: &Value| -> Vec<String> {
        let mut names: Vec<String> = page["rooms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    };

    let (status, page) = matrixon
        .get(
            &format!("/_matrix/client/v1/rooms/{matrixon_space}/hierarchy"),
            Some(&alice_token),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        names(&page),
        [
            "Matrixon child",
            "Matrixon space",
            "Synapse child",
            "Synapse space"
        ],
        "{page}\n{}",
        synapse.log_tail()
    );
    let remote = page["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["room_id"] == synapse_space.as_str())
        .expect("Synapse's space");
    assert_eq!(remote["room_type"], "m.space", "{remote}");
    assert_eq!(
        remote["children_state"][0]["state_key"],
        synapse_room.as_str()
    );

    // Synapse's user, joined to Matrixon's space, sees Matrixon's child room through it.
    let (status, joined) = synapse
        .request(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/join/{matrixon_space}?server_name={matrixon_name}"),
            Some(&bob_token),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 200, "{joined}\n{}", synapse.log_tail());
    let (status, page) = synapse
        .request(
            reqwest::Method::GET,
            &format!("/_matrix/client/v1/rooms/{matrixon_space}/hierarchy"),
            Some(&bob_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        names(&page).contains(&"Matrixon child".to_owned()),
        "{page}\n{}",
        synapse.log_tail()
    );
    matrixon.finish().await;
}

/// Restricted rooms across servers: a member of the allowed room joins the restricted room
/// of the other server, vouched for by a user of that server (`join_authorised_via_users_server`)
/// and countersigned by it; before joining the allowed room the join is refused. Both ways.
#[tokio::test(flavor = "multi_thread")]
async fn restricted_rooms_admit_members_of_allowed_rooms_across_servers() {
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    let matrixon = federating_server(&Backend::Sqlite).await;
    let (alice, alice_token) = user(&matrixon, "alice", "Alice on Matrixon").await;
    let (bob, bob_token) = synapse.register("bob").await;
    let restricted = |allowed: &str| {
        json!({
            "preset": "private_chat", "room_version": "10",
            "initial_state": [{
                "type": "m.room.join_rules", "state_key": "",
                "content": { "join_rule": "restricted",
                             "allow": [{ "type": "m.room_membership", "room_id": allowed }] },
            }],
        })
    };
    let on_matrixon = async |body: Value| create_room(&matrixon, &alice_token, &body).await;
    let on_synapse = async |body: Value| synapse.create_room(&bob_token, &body).await;
    let bob_joins = async |room: &str| {
        synapse
            .request(
                reqwest::Method::POST,
                &format!(
                    "/_matrix/client/v3/join/{room}?server_name={}",
                    server_name(&matrixon)
                ),
                Some(&bob_token),
                Some(&json!({})),
            )
            .await
    };
    let alice_joins = async |room: &str| {
        matrixon
            .post_json(
                &format!("/_matrix/client/v3/join/{room}?via={}", synapse.server_name),
                Some(&alice_token),
                &json!({}),
            )
            .await
    };

    // Matrixon's restricted room, for members of its lobby.
    let lobby = on_matrixon(json!({ "preset": "public_chat", "room_version": "10" })).await;
    let inner = on_matrixon(restricted(&lobby)).await;
    let (status, body) = bob_joins(&inner).await;
    assert_eq!(status, 403, "not in the lobby yet: {body}");
    let (status, body) = bob_joins(&lobby).await;
    assert_eq!(status, 200, "{body}\n{}", synapse.log_tail());
    let (status, body) = bob_joins(&inner).await;
    assert_eq!(status, 200, "{body}\n{}", synapse.log_tail());
    let (_, members) = matrixon
        .get(
            &format!("/_matrix/client/v3/rooms/{inner}/joined_members"),
            Some(&alice_token),
        )
        .await;
    assert!(members["joined"].get(&bob).is_some(), "{members}");

    // Synapse's restricted room, for members of its lobby.
    let lobby = on_synapse(json!({ "preset": "public_chat", "room_version": "10" })).await;
    let inner = on_synapse(restricted(&lobby)).await;
    let (status, body) = alice_joins(&inner).await;
    assert_eq!(status, 403, "not in the lobby yet: {body}");
    let (status, body) = alice_joins(&lobby).await;
    assert_eq!(status, 200, "{body}\n{}", synapse.log_tail());
    let (status, body) = alice_joins(&inner).await;
    assert_eq!(status, 200, "{body}\n{}", synapse.log_tail());
    let (_, members) = synapse
        .request(
            reqwest::Method::GET,
            &format!("/_matrix/client/v3/rooms/{inner}/joined_members"),
            Some(&bob_token),
            None,
        )
        .await;
    assert!(members["joined"].get(&alice).is_some(), "{members}");
    matrixon.finish().await;
}

/// A Matrixon user invites a Synapse user (countersigned by Synapse), who sees the invite,
/// joins and leaves again; a room created with a remote invite does the same.
#[tokio::test(flavor = "multi_thread")]
async fn invites_and_leaves_cross_to_synapse() {
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    let matrixon = federating_server(&Backend::Sqlite).await;
    let (_alice, alice_token) = user(&matrixon, "alice", "Alice on Matrixon").await;
    let (bob, bob_token) = synapse.register("bob").await;
    let (status, created) = matrixon
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice_token),
            &json!({ "preset": "private_chat", "name": "Invite only" }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let room_id = created["room_id"].as_str().expect("room").to_owned();
    let (status, invited) = matrixon
        .post_json(
            &format!("/_matrix/client/v3/rooms/{room_id}/invite"),
            Some(&alice_token),
            &json!({ "user_id": bob }),
        )
        .await;
    assert_eq!(status, 200, "{invited}\n{}", synapse.log_tail());
    let membership = |token: String, room: String| {
        let matrixon = &matrixon;
        let bob = bob.clone();
        async move {
            matrixon
                .get(
                    &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{bob}"),
                    Some(&token),
                )
                .await
        }
    };
    let (status, member) = membership(alice_token.clone(), room_id.clone()).await;
    assert_eq!(
        (status, &member["membership"]),
        (200, &json!("invite")),
        "{member}"
    );

    // Synapse shows the invite; bob accepts it (make_join and send_join to Matrixon).
    let mut seen = false;
    for _ in 0..50 {
        let (_, sync) = synapse
            .request(
                reqwest::Method::GET,
                "/_matrix/client/v3/sync?timeout=0",
                Some(&bob_token),
                None,
            )
            .await;
        if sync["rooms"]["invite"].get(&room_id).is_some() {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(seen, "the invite reached bob\n{}", synapse.log_tail());
    let (status, joined) = synapse
        .request(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/rooms/{room_id}/join"),
            Some(&bob_token),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 200, "{joined}\n{}", synapse.log_tail());
    let (_, member) = membership(alice_token.clone(), room_id.clone()).await;
    assert_eq!(member["membership"], "join", "{member}");

    // Bob leaves: the leave arrives in a transaction.
    let (status, _) = synapse
        .request(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/rooms/{room_id}/leave"),
            Some(&bob_token),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 200);
    let mut left = false;
    for _ in 0..50 {
        let (_, member) = membership(alice_token.clone(), room_id.clone()).await;
        if member["membership"] == "leave" {
            left = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(left, "bob's leave reached Matrixon\n{}", synapse.log_tail());

    // createRoom with a remote invitee.
    let (status, created) = matrixon
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice_token),
            &json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [bob] }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let direct = created["room_id"].as_str().expect("room").to_owned();
    let (_, member) = membership(alice_token.clone(), direct).await;
    assert_eq!(
        member["membership"],
        "invite",
        "{member}\n{}",
        synapse.log_tail()
    );
    assert_eq!(member["is_direct"], true, "{member}");
    matrixon.finish().await;
}

/// A Synapse user invites a Matrixon user (Matrixon countersigns), who sees the invite with the
/// room's name and accepts it; a second invite is rejected (make_leave, send_leave).
#[tokio::test(flavor = "multi_thread")]
async fn invites_from_synapse_are_shown_accepted_and_rejected() {
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    let matrixon = federating_server(&Backend::Sqlite).await;
    let (alice, alice_token) = user(&matrixon, "alice", "Alice on Matrixon").await;
    let (_bob, bob_token) = synapse.register("bob").await;
    let mut rooms = Vec::new();
    for name in ["Accept me", "Reject me"] {
        let (status, created) = synapse
            .request(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&bob_token),
                Some(&json!({ "preset": "private_chat", "name": name, "invite": [alice] })),
            )
            .await;
        assert_eq!(status, 200, "{created}\n{}", synapse.log_tail());
        rooms.push(created["room_id"].as_str().expect("room").to_owned());
    }
    let (accept, reject) = (&rooms[0], &rooms[1]);
    let mut invited = Value::Null;
    for _ in 0..50 {
        let (_, sync) = matrixon
            .get("/_matrix/client/v3/sync?timeout=0", Some(&alice_token))
            .await;
        if sync["rooms"]["invite"].get(accept).is_some()
            && sync["rooms"]["invite"].get(reject).is_some()
        {
            invited = sync;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let shown = invited["rooms"]["invite"][accept]["invite_state"]["events"].to_string();
    assert!(
        shown.contains("Accept me"),
        "the invite shows the room's name: {invited}\n{}",
        synapse.log_tail()
    );

    let (status, joined) = matrixon
        .post_json(
            &format!("/_matrix/client/v3/rooms/{accept}/join"),
            Some(&alice_token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{joined}\n{}", synapse.log_tail());
    let (status, rejected) = matrixon
        .post_json(
            &format!("/_matrix/client/v3/rooms/{reject}/leave"),
            Some(&alice_token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{rejected}\n{}", synapse.log_tail());

    let membership_on_synapse = |room: String| {
        let synapse = &synapse;
        let token = bob_token.clone();
        let alice = alice.clone();
        async move {
            synapse
                .request(
                    reqwest::Method::GET,
                    &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{alice}"),
                    Some(&token),
                    None,
                )
                .await
                .1["membership"]
                .clone()
        }
    };
    let mut outcome = (Value::Null, Value::Null);
    for _ in 0..50 {
        outcome = (
            membership_on_synapse(accept.clone()).await,
            membership_on_synapse(reject.clone()).await,
        );
        if outcome == (json!("join"), json!("leave")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        outcome,
        (json!("join"), json!("leave")),
        "{}",
        synapse.log_tail()
    );
    let (_, sync) = matrixon
        .get("/_matrix/client/v3/sync?timeout=0", Some(&alice_token))
        .await;
    assert!(sync["rooms"]["join"].get(accept).is_some(), "{sync}");
    assert!(sync["rooms"]["invite"].get(reject).is_none(), "{sync}");
    // The joined room comes with its state, though the invite that opened its timeline
    // was kept without it.
    let joined = &sync["rooms"]["join"][accept];
    let shown: Vec<&Value> = joined["state"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            joined["timeline"]["events"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .collect();
    for kind in ["m.room.create", "m.room.name", "m.room.power_levels"] {
        assert!(
            shown.iter().any(|e| e["type"] == kind),
            "{kind} missing from the joined room: {joined}"
        );
    }
    matrixon.finish().await;
}

/// Polls `check` on the answer of `get` until it holds (10 s at most).
async fn eventually<F, Fut>(
    what: &str,
    mut get: F,
    check: impl Fn(&(u16, Value)) -> bool,
) -> (u16, Value)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (u16, Value)>,
{
    let mut last = (0, Value::Null);
    for _ in 0..50 {
        last = get().await;
        if check(&last) {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("{what}: {:?}", last);
}

/// Leaves and knocks across servers, both ways with Synapse. Matrixon as the room's server:
/// a Synapse user rejects an invite (make_leave, send_leave to Matrixon), knocks
/// (make_knock, send_knock) and is let in. (Synapse withdraws knocks only locally, so that
/// way is not asked.) Matrixon as the knocker's server: a Matrixon user knocks on a Synapse
/// room, sees it among knocked rooms with its name, withdraws (through Synapse), knocks
/// again, is invited and joins.
#[tokio::test(flavor = "multi_thread")]
async fn knocks_and_rejections_cross_to_synapse() {
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    let matrixon = federating_server(&Backend::Sqlite).await;
    let matrixon_name = server_name(&matrixon);
    let (alice, alice_token) = user(&matrixon, "alice", "Alice on Matrixon").await;
    let (bob, bob_token) = synapse.register("bob").await;
    let on_synapse = |method: reqwest::Method, path: String, body: Option<Value>| {
        let (synapse, token) = (&synapse, bob_token.clone());
        async move {
            synapse
                .request(method, &path, Some(&token), body.as_ref())
                .await
        }
    };
    let member_here = |room: String, who: String| {
        let (matrixon, token) = (&matrixon, alice_token.clone());
        async move {
            matrixon
                .get(
                    &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{who}"),
                    Some(&token),
                )
                .await
                .1
        }
    };

    // An invite bob rejects: his server is not in the room, so it asks Matrixon.
    let (_, created) = matrixon
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice_token),
            &json!({ "preset": "private_chat", "invite": [bob] }),
        )
        .await;
    let invited_room = created["room_id"].as_str().expect("room").to_owned();
    eventually(
        "bob sees the invite",
        || {
            on_synapse(
                reqwest::Method::GET,
                "/_matrix/client/v3/sync?timeout=0".into(),
                None,
            )
        },
        |sync| sync.1["rooms"]["invite"].get(&invited_room).is_some(),
    )
    .await;
    let (status, body) = on_synapse(
        reqwest::Method::POST,
        format!("/_matrix/client/v3/rooms/{invited_room}/leave"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", synapse.log_tail());
    let member = member_here(invited_room.clone(), bob.clone()).await;
    assert_eq!(member["membership"], "leave", "{member}");

    // A knock room on Matrixon: bob knocks, withdraws, knocks again, and alice lets him in.
    let (_, created) = matrixon
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice_token),
            &json!({ "preset": "private_chat", "name": "Knock here", "initial_state": [
                {"type": "m.room.join_rules", "content": {"join_rule": "knock"}}] }),
        )
        .await;
    let knock_room = created["room_id"].as_str().expect("room").to_owned();
    let knock = |reason: &str| {
        on_synapse(
            reqwest::Method::POST,
            format!("/_matrix/client/v3/knock/{knock_room}?server_name={matrixon_name}"),
            Some(json!({ "reason": reason })),
        )
    };
    let (status, body) = knock("let me in").await;
    assert_eq!(status, 200, "{body}\n{}", synapse.log_tail());
    let member = member_here(knock_room.clone(), bob.clone()).await;
    assert_eq!(
        (&member["membership"], &member["reason"]),
        (&json!("knock"), &json!("let me in"))
    );
    let (status, body) = matrixon
        .post_json(
            &format!("/_matrix/client/v3/rooms/{knock_room}/invite"),
            Some(&alice_token),
            &json!({ "user_id": bob }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = on_synapse(
        reqwest::Method::POST,
        format!("/_matrix/client/v3/join/{knock_room}?server_name={matrixon_name}"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", synapse.log_tail());
    assert_eq!(
        member_here(knock_room.clone(), bob.clone()).await["membership"],
        "join"
    );

    // Matrixon as the knocker's server, on a Synapse room.
    let (_, created) = on_synapse(
        reqwest::Method::POST,
        "/_matrix/client/v3/createRoom".into(),
        Some(
            json!({ "preset": "private_chat", "name": "Synapse knock room",
            "room_version": "10", "initial_state": [
            {"type": "m.room.join_rules", "content": {"join_rule": "knock"}}] }),
        ),
    )
    .await;
    let remote = created["room_id"].as_str().expect("room").to_owned();
    let synapse_name = synapse.server_name.clone();
    let knock_remote = |reason: &'static str| {
        let (matrixon, token, path) = (
            &matrixon,
            alice_token.clone(),
            format!("/_matrix/client/v3/knock/{remote}?via={synapse_name}"),
        );
        async move {
            matrixon
                .post_json(&path, Some(&token), &json!({ "reason": reason }))
                .await
        }
    };
    let (status, body) = knock_remote("hello from Matrixon").await;
    assert_eq!(status, 200, "{body}\n{}", synapse.log_tail());
    let member_there = || {
        on_synapse(
            reqwest::Method::GET,
            format!("/_matrix/client/v3/rooms/{remote}/state/m.room.member/{alice}"),
            None,
        )
    };
    let (_, member) = member_there().await;
    assert_eq!(member["membership"], "knock", "{member}");
    let (_, sync) = matrixon
        .get("/_matrix/client/v3/sync", Some(&alice_token))
        .await;
    let knocked = &sync["rooms"]["knock"][&remote]["knock_state"]["events"];
    assert!(
        knocked.as_array().is_some_and(|events| events
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Synapse knock room")),
        "{sync}"
    );
    // Withdrawn through Synapse, then again, then let in.
    let (status, body) = matrixon
        .post_json(
            &format!("/_matrix/client/v3/rooms/{remote}/leave"),
            Some(&alice_token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}\n{}", synapse.log_tail());
    eventually("the withdrawal reached Synapse", member_there, |m| {
        m.1["membership"] == "leave"
    })
    .await;
    assert_eq!(knock_remote("once more").await.0, 200);
    let (status, body) = on_synapse(
        reqwest::Method::POST,
        format!("/_matrix/client/v3/rooms/{remote}/invite"),
        Some(json!({ "user_id": alice })),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", synapse.log_tail());
    let mut joined = (0, Value::Null);
    for _ in 0..50 {
        joined = matrixon
            .post_json(
                &format!("/_matrix/client/v3/join/{remote}?via={synapse_name}"),
                Some(&alice_token),
                &json!({}),
            )
            .await;
        if joined.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(joined.0, 200, "{:?}\n{}", joined.1, synapse.log_tail());
    eventually("alice joined on Synapse", member_there, |m| {
        m.1["membership"] == "join"
    })
    .await;
    let _ = bob_token;
    matrixon.finish().await;
}

/// Media across servers, with Synapse both ways: a Synapse user's picture is fetched by
/// Matrixon on first request (authenticated federation media), thumbnailed here and served
/// from the copy afterwards, even with Synapse gone; a Matrixon user's picture is fetched
/// by Synapse from Matrixon's federation media endpoints. Unknown media is 404 both ways, and
/// the federation endpoints need a signature.
#[tokio::test(flavor = "multi_thread")]
async fn media_crosses_to_and_from_synapse() {
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    let matrixon = federating_server(&Backend::Sqlite).await;
    let matrixon_name = server_name(&matrixon).to_string();
    let (_alice, alice_token) = user(&matrixon, "alice", "Alice on Matrixon").await;
    let (_bob, bob_token) = synapse.register("bob").await;
    let picture = crate::media::image(image::ImageFormat::Png, 64, 48);
    let client = reqwest::Client::new();

    // Bob's picture, uploaded to Synapse, downloaded through Matrixon.
    let uploaded: Value = client
        .post(format!(
            "{}/_matrix/media/v3/upload?filename=bob.png",
            synapse.client_url
        ))
        .bearer_auth(&bob_token)
        .header("content-type", "image/png")
        .body(picture.clone())
        .send()
        .await
        .expect("upload to Synapse")
        .json()
        .await
        .expect("json");
    let uri = uploaded["content_uri"]
        .as_str()
        .expect("content uri")
        .to_owned();
    let (origin, id) = uri
        .strip_prefix("mxc://")
        .and_then(|rest| rest.split_once('/'))
        .expect("mxc");
    let get = |path: String| {
        let (client, token, url) = (&client, alice_token.clone(), matrixon.url(&path));
        async move {
            let response = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("answer");
            let status = response.status().as_u16();
            let kind = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (status, kind, response.bytes().await.expect("body").to_vec())
        }
    };
    let (status, kind, body) =
        get(format!("/_matrix/client/v1/media/download/{origin}/{id}")).await;
    assert_eq!(
        status,
        200,
        "{}\n{}",
        String::from_utf8_lossy(&body),
        synapse.log_tail()
    );
    assert_eq!((kind.as_str(), body == picture), ("image/png", true));
    let (status, kind, thumb) = get(format!(
        "/_matrix/client/v1/media/thumbnail/{origin}/{id}?width=32&height=32&method=scale"
    ))
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&thumb));
    assert!(kind.starts_with("image/"), "{kind}");
    let (status, _, body) = get(format!(
        "/_matrix/client/v1/media/download/{origin}/nosuchmedia"
    ))
    .await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));

    // Alice's picture, uploaded here, downloaded through Synapse.
    let (status, uploaded) = {
        let response = client
            .post(matrixon.url("/_matrix/media/v3/upload?filename=alice.png"))
            .bearer_auth(&alice_token)
            .header("content-type", "image/png")
            .body(picture.clone())
            .send()
            .await
            .expect("upload");
        (
            response.status().as_u16(),
            response.json::<Value>().await.expect("json"),
        )
    };
    assert_eq!(status, 200, "{uploaded}");
    let ours = uploaded["content_uri"].as_str().expect("uri").to_owned();
    let our_id = ours.rsplit('/').next().expect("id").to_owned();
    let fetched = client
        .get(format!(
            "{}/_matrix/client/v1/media/download/{matrixon_name}/{our_id}",
            synapse.client_url
        ))
        .bearer_auth(&bob_token)
        .send()
        .await
        .expect("Synapse answers");
    assert_eq!(fetched.status().as_u16(), 200, "{}", synapse.log_tail());
    assert_eq!(fetched.bytes().await.expect("body").to_vec(), picture);
    let thumb = client
        .get(format!(
            "{}/_matrix/client/v1/media/thumbnail/{matrixon_name}/{our_id}?width=32&height=32",
            synapse.client_url
        ))
        .bearer_auth(&bob_token)
        .send()
        .await
        .expect("Synapse answers");
    assert_eq!(thumb.status().as_u16(), 200, "{}", synapse.log_tail());

    // The federation endpoints: unsigned is 401, unknown media 404.
    let unsigned = client
        .get(matrixon.url(&format!("/_matrix/federation/v1/media/download/{our_id}")))
        .send()
        .await
        .expect("answer");
    assert_eq!(unsigned.status().as_u16(), 401);

    // Synapse gone: the copy is served, and its thumbnail.
    drop(synapse);
    let (status, _, body) = get(format!("/_matrix/client/v1/media/download/{origin}/{id}")).await;
    assert_eq!((status, body == picture), (200, true));
    let (status, _, _) = get(format!(
        "/_matrix/client/v1/media/thumbnail/{origin}/{id}?width=32&height=32&method=scale"
    ))
    .await;
    assert_eq!(status, 200);
    matrixon.finish().await;
}

/// A public room of `alice`'s on `matrixon` that Synapse's `bob` joins; its id.
async fn shared_room(
    matrixon: &TestServer,
    alice_token: &str,
    synapse: &Synapse,
    bob_token: &str,
) -> String {
    let (_, created) = matrixon
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(alice_token),
            &json!({ "preset": "public_chat" }),
        )
        .await;
    let room = created["room_id"].as_str().expect("room").to_owned();
    let name = server_name(matrixon);
    let (status, body) = synapse
        .request(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/join/{room}?server_name={name}"),
            Some(bob_token),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}\n{}", synapse.log_tail());
    room
}

/// Encryption's plumbing across servers, with Synapse both ways: to-device messages (how
/// room keys and verification travel) reach the other server's devices once, and a new
/// device on either side shows in the other side's `device_lists.changed` for its room mates.
#[tokio::test(flavor = "multi_thread")]
async fn to_device_messages_and_device_lists_cross_to_synapse() {
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    let matrixon = federating_server(&Backend::Sqlite).await;
    let (alice, alice_token) = user(&matrixon, "alice", "Alice on Matrixon").await;
    let (_, whoami) = matrixon
        .get("/_matrix/client/v3/account/whoami", Some(&alice_token))
        .await;
    let alice_device = whoami["device_id"].as_str().expect("device").to_owned();
    let (bob, bob_token) = synapse.register("bob").await;
    let (_, bob_whoami) = synapse
        .request(
            reqwest::Method::GET,
            "/_matrix/client/v3/account/whoami",
            Some(&bob_token),
            None,
        )
        .await;
    let bob_device = bob_whoami["device_id"].as_str().expect("device").to_owned();
    // A room they share.
    shared_room(&matrixon, &alice_token, &synapse, &bob_token).await;
    let (_, first) = matrixon
        .get("/_matrix/client/v3/sync", Some(&alice_token))
        .await;
    let alice_since = first["next_batch"].as_str().expect("next_batch").to_owned();
    let (_, first) = synapse
        .request(
            reqwest::Method::GET,
            "/_matrix/client/v3/sync?timeout=0",
            Some(&bob_token),
            None,
        )
        .await;
    let bob_since = first["next_batch"].as_str().expect("next_batch").to_owned();

    // bob → alice's device.
    let (status, body) = synapse
        .request(
            reqwest::Method::PUT,
            "/_matrix/client/v3/sendToDevice/org.example.hello/b1",
            Some(&bob_token),
            Some(&json!({ "messages": { &alice: { &alice_device: { "hello": "from bob" } } } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let matrixon_sync = |since: String| {
        let (matrixon, token) = (&matrixon, alice_token.clone());
        async move {
            matrixon
                .get(
                    &format!("/_matrix/client/v3/sync?timeout=0&since={since}"),
                    Some(&token),
                )
                .await
        }
    };
    let got = eventually(
        "bob's message reached alice",
        || matrixon_sync(alice_since.clone()),
        |s| {
            s.1["to_device"]["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["type"] == "org.example.hello"))
        },
    )
    .await;
    let message = got.1["to_device"]["events"]
        .as_array()
        .and_then(|events| events.iter().find(|e| e["type"] == "org.example.hello"))
        .cloned()
        .expect("message");
    assert_eq!(
        (&message["sender"], &message["content"]["hello"]),
        (&json!(bob), &json!("from bob"))
    );

    // alice → bob's device, once even when the request is sent twice.
    for _ in 0..2 {
        let (status, body) = matrixon
            .put_json(
                "/_matrix/client/v3/sendToDevice/org.example.hello/a1",
                Some(&alice_token),
                &json!({ "messages": { &bob: { &bob_device: { "hello": "from alice" } } } }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let bob_sync = |since: String| {
        let (synapse, token) = (&synapse, bob_token.clone());
        async move {
            synapse
                .request(
                    reqwest::Method::GET,
                    &format!("/_matrix/client/v3/sync?timeout=0&since={since}"),
                    Some(&token),
                    None,
                )
                .await
        }
    };
    let got = eventually(
        "alice's message reached bob",
        || bob_sync(bob_since.clone()),
        |s| {
            s.1["to_device"]["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["type"] == "org.example.hello"))
        },
    )
    .await;
    let messages: Vec<&Value> = got.1["to_device"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == "org.example.hello")
        .collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["content"]["hello"], "from alice");

    // A new device of alice's shows in bob's device lists, and one of bob's in alice's.
    let (_, relogin) = matrixon
        .post_json(
            "/_matrix/client/v3/login",
            None,
            &json!({ "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                "password": "a long password" }),
        )
        .await;
    assert!(relogin["access_token"].is_string(), "{relogin}");
    // The new device's keys (what another server's clients encrypt to), self-signed.
    let new_device = relogin["device_id"].as_str().expect("device");
    let der = Ed25519KeyPair::generate();
    let device_key = Ed25519KeyPair::from_der(&der, new_device.to_owned()).expect("key pair");
    let public = Base64::<ruma::serde::base64::Standard>::new(device_key.public_key().to_vec());
    let mut keys: CanonicalJsonObject = serde_json::from_value(json!({
        "user_id": alice, "device_id": new_device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": { format!("curve25519:{new_device}"): "3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI",
                  format!("ed25519:{new_device}"): public.encode() },
    }))
    .expect("keys");
    ruma::signatures::sign_json(&alice, &device_key, &mut keys).expect("signed");
    let (status, body) = matrixon
        .post_json(
            "/_matrix/client/v3/keys/upload",
            relogin["access_token"].as_str(),
            &json!({ "device_keys": keys }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Synapse answers a repeated `since` from a cache: each poll goes on from the last.
    let since = std::sync::Mutex::new(bob_since.clone());
    eventually(
        "alice's new device reached bob's device lists",
        || async {
            let from = since.lock().expect("since").clone();
            let answer = bob_sync(from).await;
            if let Some(next) = answer.1["next_batch"].as_str() {
                *since.lock().expect("since") = next.to_owned();
            }
            answer
        },
        |s| {
            s.1["device_lists"]["changed"]
                .as_array()
                .is_some_and(|users| users.contains(&json!(alice)))
        },
    )
    .await;
    let (status, body) = synapse
        .request(
            reqwest::Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(&json!({ "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"},
                "password": crate::synapse::password("bob") })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    eventually(
        "bob's new device reached alice's device lists",
        || matrixon_sync(alice_since.clone()),
        |s| {
            s.1["device_lists"]["changed"]
                .as_array()
                .is_some_and(|users| users.contains(&json!(bob)))
        },
    )
    .await;
    matrixon.finish().await;
}

/// Presence across servers, with Synapse both ways: a status set on one server shows on
/// the other for a room mate (`m.presence` EDUs).
#[tokio::test(flavor = "multi_thread")]
async fn presence_crosses_to_and_from_synapse() {
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    let matrixon = federating_server(&Backend::Sqlite).await;
    let (alice, alice_token) = user(&matrixon, "alice", "Alice on Matrixon").await;
    let (bob, bob_token) = synapse.register("bob").await;
    shared_room(&matrixon, &alice_token, &synapse, &bob_token).await;

    // bob's status, read on Matrixon.
    let (status, body) = synapse
        .request(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/presence/{bob}/status"),
            Some(&bob_token),
            Some(&json!({ "presence": "online", "status_msg": "on Synapse" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let path = format!("/_matrix/client/v3/presence/{bob}/status");
    eventually(
        "bob's status reached Matrixon",
        || matrixon.get(&path, Some(&alice_token)),
        |p| p.1["status_msg"] == "on Synapse" && p.1["presence"] == "online",
    )
    .await;

    // alice's status, read on Synapse.
    let (status, body) = matrixon
        .put_json(
            &format!("/_matrix/client/v3/presence/{alice}/status"),
            Some(&alice_token),
            &json!({ "presence": "unavailable", "status_msg": "on Matrixon" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let path = format!("/_matrix/client/v3/presence/{alice}/status");
    eventually(
        "alice's status reached Synapse",
        || synapse.request(reqwest::Method::GET, &path, Some(&bob_token), None),
        |p| p.1["status_msg"] == "on Matrixon" && p.1["presence"] == "unavailable",
    )
    .await;
    matrixon.finish().await;
}

/// The PDUs Synapse's log says it received from `origin`, summed over its transactions.
fn pdus_received(synapse: &Synapse, origin: &str) -> usize {
    synapse
        .log()
        .lines()
        .filter(|l| l.contains("Received txn") && l.contains(&format!("from {origin}.")))
        .filter_map(|l| {
            l.split("(PDUs: ")
                .nth(1)?
                .split(',')
                .next()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .sum()
}

/// Two instances on one PostgreSQL share one outbox: each event reaches Synapse once,
/// whichever instance it was sent through (one sender per destination at a time, by lease).
#[tokio::test(flavor = "multi_thread")]
async fn two_instances_send_each_event_once() {
    let Some(backend) = Backend::postgres("two_instances_send_each_event_once") else {
        return;
    };
    let Some(synapse) = Synapse::start().await else {
        return;
    };
    let a = federating_server(&backend).await;
    let name = server_name(&a);
    let port = a
        .server
        .as_ref()
        .and_then(|s| s.services.config.federation.listen)
        .expect("a federation listener")
        .port();
    // The second instance: the same server, no listener of its own for other servers.
    let mut config = crate::harness::test_config(&a.db.url);
    federating(&mut config, port);
    config.federation.listen = None;
    let b = matrixon::Server::start_with_clock(
        config,
        std::sync::Arc::new(crate::harness::TestClock::default()),
    )
    .await
    .expect("second instance starts");
    let b_base = b.base_url();
    let (_, alice_token) = user(&a, "alice", "Alice").await;
    let (_bob, bob_token) = synapse.register("bob").await;
    let room = shared_room(&a, &alice_token, &synapse, &bob_token).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let before = pdus_received(&synapse, name.as_str());
    // 20 messages, alternating between the instances.
    let http = reqwest::Client::new();
    for i in 0..20 {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b_base.clone()
        };
        let sent = http
            .put(format!(
                "{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/m{i}"
            ))
            .bearer_auth(&alice_token)
            .json(&json!({ "msgtype": "m.text", "body": format!("message {i}") }))
            .send()
            .await
            .expect("sent");
        assert_eq!(sent.status().as_u16(), 200);
    }
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50");
    eventually(
        "every message reached Synapse",
        || synapse.request(reqwest::Method::GET, &path, Some(&bob_token), None),
        |page| {
            page.1["chunk"].as_array().is_some_and(|events| {
                events.iter().any(|e| e["content"]["body"] == "message 19")
                    && events
                        .iter()
                        .filter(|e| e["type"] == "m.room.message")
                        .count()
                        == 20
            })
        },
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        pdus_received(&synapse, name.as_str()) - before,
        20,
        "each event once\n{}",
        synapse.log_tail()
    );
    drop(b);
    a.finish().await;
}
