//! What other clients and servers send and expect, beyond matrix-sdk: every stable room
//! version, state paths without a state key, the shapes of devices, UIA challenges,
//! `/versions` and `/capabilities` that other libraries validate.

use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, both_backends};

both_backends!(
    every_stable_room_version_creates_joins_and_redacts,
    discovery_announces_what_exists,
    responses_have_the_fields_client_schemas_require,
);

fn token(v: &Value) -> String {
    v["access_token"].as_str().expect("token").to_owned()
}

async fn every_stable_room_version_creates_joins_and_redacts(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let bob = token(&srv.register("bob", "pw bob 1").await);
    for version in 1..=12 {
        let version = version.to_string();
        let created = srv
            .post_json(
                "/_matrix/client/v3/createRoom",
                Some(&alice),
                &json!({"room_version": version, "preset": "public_chat"}),
            )
            .await;
        assert_eq!(created.0, 200, "v{version}: {:?}", created.1);
        let room = created.1["room_id"].as_str().expect("room id").to_owned();
        let r = |rest: &str| format!("/_matrix/client/v3/rooms/{room}/{rest}");
        let joined = srv
            .post_json(
                &format!("/_matrix/client/v3/join/{room}"),
                Some(&bob),
                &json!({}),
            )
            .await;
        assert_eq!(joined.0, 200, "v{version}: {:?}", joined.1);

        // A state event with an empty key, addressed without the trailing slash.
        let named = srv
            .put_json(
                &r("state/m.room.name"),
                Some(&alice),
                &json!({"name": format!("v{version}")}),
            )
            .await;
        assert_eq!(named.0, 200, "v{version}: {:?}", named.1);
        let name = srv.get(&r("state/m.room.name"), Some(&bob)).await;
        assert_eq!(name.1, json!({"name": format!("v{version}")}), "v{version}");
        assert_eq!(
            srv.get(&r("state/m.room.name/"), Some(&bob)).await.1,
            name.1
        );

        // The same transaction id in every room: each is a new event, not a retry.
        let sent = srv
            .put_json(
                &r("send/m.room.message/t1"),
                Some(&alice),
                &json!({"msgtype": "m.text", "body": "hello"}),
            )
            .await;
        assert_eq!(sent.0, 200, "v{version}: {:?}", sent.1);
        let event_id = sent.1["event_id"].as_str().expect("event id").to_owned();
        // Versions 1 and 2 name events `$opaque:server`; later ones by their hash.
        let opaque = event_id.contains(':');
        assert_eq!(
            opaque,
            version == "1" || version == "2",
            "v{version}: {event_id}"
        );
        let encoded: String = url::form_urlencoded::byte_serialize(event_id.as_bytes()).collect();
        let seen = srv.get(&r(&format!("event/{encoded}")), Some(&bob)).await;
        assert_eq!(seen.0, 200, "v{version}: {:?}", seen.1);
        assert_eq!(seen.1["content"]["body"], "hello");
        let redacted = srv
            .put_json(
                &r(&format!("redact/{encoded}/t2")),
                Some(&alice),
                &json!({}),
            )
            .await;
        assert_eq!(redacted.0, 200, "v{version}: {:?}", redacted.1);
        let seen = srv.get(&r(&format!("event/{encoded}")), Some(&bob)).await;
        assert_eq!(seen.1["content"], json!({}), "v{version}: {:?}", seen.1);

        // A member can still be kicked and banned by the old versions' auth rules.
        let kicked = srv
            .post_json(
                &r("kick"),
                Some(&alice),
                &json!({"user_id": "@bob:localhost"}),
            )
            .await;
        assert_eq!(kicked.0, 200, "v{version}: {:?}", kicked.1);
        let refused = srv
            .put_json(
                &r("send/m.room.message/t3"),
                Some(&bob),
                &json!({"body": "x"}),
            )
            .await;
        assert_eq!(refused.0, 403, "v{version}: {:?}", refused.1);
    }
    srv.finish().await;
}

async fn discovery_announces_what_exists(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    let versions = srv.get("/_matrix/client/versions", None).await;
    let list = versions.1["versions"].as_array().expect("versions").clone();
    // v1.11 is authenticated media: Element loads images only once it is announced.
    for v in ["r0.6.1", "v1.5", "v1.11"] {
        assert!(list.contains(&json!(v)), "{v} missing from {list:?}");
    }
    let alice = token(&srv.register("alice", "pw alice 1").await);
    let caps = srv
        .get("/_matrix/client/v3/capabilities", Some(&alice))
        .await;
    let room_versions = &caps.1["capabilities"]["m.room_versions"];
    assert_eq!(room_versions["default"], "11", "{caps:?}");
    for v in 1..=12 {
        assert_eq!(
            room_versions["available"][v.to_string()],
            "stable",
            "{caps:?}"
        );
    }
    srv.finish().await;
}

async fn responses_have_the_fields_client_schemas_require(backend: Backend) {
    let srv = TestServer::start(&backend).await;
    // matrix-nio's schema wants `params` in every UIA challenge.
    let challenge = srv
        .post_json(
            "/_matrix/client/v3/register",
            None,
            &json!({"username": "carol", "password": "pw carol 1"}),
        )
        .await;
    assert_eq!(challenge.0, 401);
    assert_eq!(challenge.1["params"], json!({}), "{:?}", challenge.1);
    // …and every key of a device, `null` when unknown (the registration's device has not
    // been used yet).
    let carol = srv.register("carol", "pw carol 1").await;
    let devices = srv
        .get("/_matrix/client/v3/devices", Some(&token(&carol)))
        .await;
    assert_eq!(devices.0, 200);
    let device = &devices.1["devices"][0];
    for key in ["device_id", "display_name", "last_seen_ip", "last_seen_ts"] {
        let fields = device.as_object().expect("object");
        assert!(fields.contains_key(key), "{key} missing: {device}");
    }
    let id = device["device_id"].as_str().expect("id");
    let one = srv
        .get(
            &format!("/_matrix/client/v3/devices/{id}"),
            Some(&token(&carol)),
        )
        .await;
    assert_eq!(one.1["device_id"], id);
    assert!(
        one.1
            .as_object()
            .expect("object")
            .contains_key("last_seen_ts")
    );
    srv.finish().await;
}
